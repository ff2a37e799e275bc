"""llama.cpp's RPC backend on llama_cpp's own ggml: a model's layers on other machines, and the server
that holds them (`edge-ai rpc-server`).

Client: `ggml_backend_rpc_add_server(endpoint)` gives a backend registry whose devices llama.cpp can
place layers on; llama-cpp-python 0.3.36 has no `rpc_servers` (llama.cpp dropped it for
`llama_model_params.devices`, a NULL-terminated array of devices that llama-cpp-python declares but
never sets), so `applied` puts the array on the default model params for one `Llama(...)` call, as
`overrides.applied` does for tensor overrides. Every ggml function comes through libllama's handle:
a second copy of ggml would have its own device list.

ggml's client aborts the whole process (GGML_ABORT) when a server cannot be reached, speaks another
protocol version or is busy with another client (a server takes one client at a time and a second
one waits in its listen queue). So each server is first greeted from Python with the protocol's
HELLO, with a timeout: a problem becomes one line naming the server, and only then does ggml connect.

Server: `ggml_backend_rpc_start_server` from the RPC registry (llama.cpp's rpc-server tool calls the
same), on the CPU device of this process. It blocks in C for good, so it runs in a daemon thread and
the main thread stays free for Ctrl-C. This version's server has no memory limit: a helper reports
its device's free memory, and clients split layers by it. `--mem` makes the CPU device report that
amount instead, by replacing `get_memory` in the device's interface table (ggml-backend-impl.h); the
process is a dedicated server, so nothing else in it reads the CPU device.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import llama_cpp.llama_cpp as llama_lib

from edge_ai.errors import EdgeAIError
from edge_ai.rpc_servers import split_endpoint
from runtime.llamacpp.overrides import GGML_BACKEND_DEVICE_TYPE_CPU, lib_function, patched_defaults

# From ggml-rpc.h / ggml-rpc.cpp / transport.h of llama-cpp-python 0.3.36's llama.cpp.
RPC_PROTO_MAJOR, RPC_PROTO_MINOR = 7, 0
RPC_CMD_HELLO = 14
RPC_CONN_CAPS_SIZE = 24  # transport capabilities in HELLO; all zero: plain TCP
_HELLO_REPLY = struct.Struct(f"<BBBB{RPC_CONN_CAPS_SIZE}s")  # major, minor, patch, padding, caps
GET_MEMORY_SLOT = 2  # ggml_backend_device_i: get_name, get_description, get_memory, ...
PROBE_TIMEOUT = 5.0  # seconds to connect and be greeted

_GetMemory = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t))
_AddServer = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
_StartServer = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                ctypes.POINTER(ctypes.c_void_p))
_add_lock = threading.Lock()


@dataclass(frozen=True)
class DeviceMemory:
    """One device of an RPC server and the memory it reports."""

    server: str  # host:port
    index: int  # the device's number on its server
    name: str  # llama.cpp's name for it in load logs (RPC0, RPC1...)
    free: int
    total: int


def _registry() -> int | None:
    return lib_function("ggml_backend_reg_by_name", ctypes.c_void_p, [ctypes.c_char_p])(b"RPC")


def supported() -> bool:
    """Whether this llama.cpp build has the RPC backend (built with -DGGML_RPC=ON)."""
    return bool(llama_lib.llama_supports_rpc()) and bool(_registry())


def _require() -> int:
    reg = _registry() if llama_lib.llama_supports_rpc() else None
    if not reg:
        raise EdgeAIError("this llama.cpp build has no RPC backend; re-run scripts/setup.sh, which rebuilds "
                          "llama-cpp-python with -DGGML_RPC=ON")
    return reg


def _proc(name: str, prototype: type) -> ctypes._CFuncPtr:
    """A function the RPC registry exports (ggml_backend_reg_get_proc_address), as llama.cpp's tools find it."""
    get = lib_function("ggml_backend_reg_get_proc_address", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p])
    address = get(_require(), name.encode())
    if not address:
        raise EdgeAIError(f"this llama.cpp build's RPC backend does not export {name}")
    return prototype(address)


def probe(server: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Greet `server` with the RPC protocol's HELLO and hang up; a one-line EdgeAIError if it cannot be
    reached, does not answer (busy with another client), or speaks another protocol version."""
    host, port = split_endpoint(server)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise EdgeAIError(f"RPC server {server} is unreachable ({exc.strerror or exc}); start `edge-ai rpc-server` "
                          "there, or fix the address in --rpc / model.rpc") from None
    try:
        with sock:
            sock.sendall(struct.pack("<BQ", RPC_CMD_HELLO, RPC_CONN_CAPS_SIZE) + bytes(RPC_CONN_CAPS_SIZE))
            size = struct.unpack("<Q", _receive(sock, 8))[0]
            if size != _HELLO_REPLY.size:
                raise EdgeAIError(f"RPC server {server} answered the greeting with {size} bytes, not "
                                  f"{_HELLO_REPLY.size}: it is not a llama.cpp RPC server of protocol {RPC_PROTO_MAJOR}")
            major, minor, patch, _, _ = _HELLO_REPLY.unpack(_receive(sock, size))
    except TimeoutError:
        raise EdgeAIError(f"RPC server {server} did not answer within {timeout:.0f} s: it serves one client at a time "
                          "and may be busy with another, or it is not an RPC server") from None
    except OSError as exc:
        raise EdgeAIError(f"RPC server {server} closed the connection at the greeting ({exc.strerror or exc}): "
                          f"it is not a llama.cpp RPC server of protocol {RPC_PROTO_MAJOR}.x") from None
    if major != RPC_PROTO_MAJOR or minor > RPC_PROTO_MINOR:
        raise EdgeAIError(f"RPC server {server} speaks protocol {major}.{minor}.{patch}, this llama.cpp "
                          f"{RPC_PROTO_MAJOR}.{RPC_PROTO_MINOR}: run the same llama-cpp-python version on both machines")


def _receive(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("connection closed")
        data += chunk
    return data


def _server_devices(server: str) -> list[int]:
    """The ggml devices of a probed server (its registry is made once per endpoint and kept by ggml)."""
    with _add_lock:
        reg = _proc("ggml_backend_rpc_add_server", _AddServer)(server.encode())
    if not reg:
        raise EdgeAIError(f"RPC server {server} offers no device")
    count = lib_function("ggml_backend_reg_dev_count", ctypes.c_size_t, [ctypes.c_void_p])(reg)
    get = lib_function("ggml_backend_reg_dev_get", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t])
    return [get(reg, i) for i in range(count)]


def devices(servers: Sequence[str]) -> list[int]:
    """Every device of `servers`, in order (each server probed first)."""
    for server in servers:
        probe(server)
    return [dev for server in servers for dev in _server_devices(server)]


def device_memory(servers: Sequence[str]) -> list[DeviceMemory]:
    """The memory each device of `servers` reports (free and total), in llama.cpp's device order."""
    name = lib_function("ggml_backend_dev_name", ctypes.c_char_p, [ctypes.c_void_p])
    memory = lib_function("ggml_backend_dev_memory", None,
                          [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)])
    found = []
    for server in servers:
        probe(server)
        for index, dev in enumerate(_server_devices(server)):
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            memory(dev, ctypes.byref(free), ctypes.byref(total))
            found.append(DeviceMemory(server, index, name(dev).decode(), free.value, total.value))
    return found


class DeviceList:
    """The NULL-terminated device array llama_model_params.devices points to, kept alive with it."""

    def __init__(self, devs: Sequence[int]) -> None:
        self.array = (ctypes.c_void_p * (len(devs) + 1))(*devs)  # the last entry stays NULL

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)


@contextlib.contextmanager
def applied(servers: Sequence[str]) -> Iterator[DeviceList | None]:
    """Within the block, `llama_cpp.Llama(...)` places its offloaded layers (n_gpu_layers, split by
    tensor_split) on the devices of `servers`; none: the default devices."""
    if not servers:
        yield None
        return
    table = DeviceList(devices(servers))
    with patched_defaults("llama_model_default_params", lambda p: setattr(p, "devices", table.address)):
        yield table


def check_port(host: str, port: int) -> None:
    """Refuse a port ggml's server could not listen on (it would only print "Failed to create server
    socket"): bound the way it binds, SO_REUSEADDR included, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EdgeAIError(f"port {port} on {host} is in use (another rpc-server?); pick a free one "
                                  "with --port") from None
            raise EdgeAIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; give one of this machine's "
                              "addresses with --host") from None


class Server:
    """llama.cpp's RPC server on this process's CPU device (one per process: it may change that device)."""

    def __init__(self, host: str, port: int, *, threads: int, memory: int | None = None) -> None:
        self.endpoint = f"{host}:{port}"
        self.threads = threads
        self._start = _proc("ggml_backend_rpc_start_server", _StartServer)
        cpu = lib_function("ggml_backend_dev_by_type", ctypes.c_void_p, [ctypes.c_int])(GGML_BACKEND_DEVICE_TYPE_CPU)
        if not cpu:
            raise EdgeAIError("this llama.cpp build has no CPU device to serve")
        self._devices = (ctypes.c_void_p * 1)(cpu)
        self._report: ctypes._CFuncPtr | None = None
        if memory is not None:
            self._report = _GetMemory(lambda _dev, free, total: _set_memory(free, total, memory))
            slot = ctypes.c_void_p.from_address(cpu + GET_MEMORY_SLOT * ctypes.sizeof(ctypes.c_void_p))
            slot.value = ctypes.cast(self._report, ctypes.c_void_p).value
        self._thread = threading.Thread(target=self._run, name="rpc-server", daemon=True)

    def _run(self) -> None:
        self._start(self.endpoint.encode(), None, self.threads, 1, self._devices)

    def serve(self) -> None:
        """Serve until interrupted; an EdgeAIError if llama.cpp's server stops by itself (it cannot bind)."""
        self._thread.start()
        while self._thread.is_alive():
            self._thread.join(0.5)  # short waits: Ctrl-C lands in this thread
        raise EdgeAIError(f"llama.cpp's RPC server on {self.endpoint} stopped (see its message above)")


def _set_memory(free: ctypes._Pointer, total: ctypes._Pointer, memory: int) -> None:
    free[0] = total[0] = memory

"""Tensor buffer-type overrides and an eval-callback tap for llama-cpp-python, which exposes neither.

llama.cpp's `llama_model_params.tensor_buft_overrides` is a NULL-terminated array of
{regex, buffer type}: every weight whose name matches is allocated in that buffer type instead of
its layer's device (llama.cpp's `-ot` / `--cpu-moe`). llama-cpp-python declares the field as a raw
pointer and never sets it, so we build the array with ctypes and put it on the params `Llama`
takes from `llama_model_default_params()`, for the duration of one `Llama(...)` call.

Why through llama_cpp's own library handle: the buffer types must come from the ggml libllama
actually loaded. Opening libggml-base.so a second time gives a second ggml whose CPU buffer type
is not the one the CPU backend knows, and llama.cpp silently stops repacking those weights.
llama.cpp matches patterns anywhere in a name (std::regex_search), so callers anchor them with `$`.
The array, the pattern bytes and the buffer-type pointers must outlive the model load: `applied`
holds them until the model is built (llama.cpp copies what it keeps).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import llama_cpp.llama_cpp as llama_lib

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import GGUFInfo

GGML_BACKEND_DEVICE_TYPE_CPU = 0  # enum ggml_backend_dev_type
# One Llama(...) at a time may see patched default params; reentrant so that patches nest (overrides
# and RPC devices on one load), each `original` being the one patched before it.
_patch_lock = threading.RLock()


class BuftOverride(ctypes.Structure):
    """struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }"""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def lib_function(name: str, restype: object, argtypes: list[object]) -> ctypes._CFuncPtr:
    fn = getattr(llama_lib._lib, name)  # dlsym on libllama's handle also finds its ggml's symbols
    fn.restype, fn.argtypes = restype, argtypes
    return fn


def buffer_type(device: str) -> int:
    """The ggml buffer type of `device` ("CPU", or a backend device name such as "CUDA0")."""
    if device.upper() == "CPU":
        dev = lib_function("ggml_backend_dev_by_type", ctypes.c_void_p, [ctypes.c_int])(GGML_BACKEND_DEVICE_TYPE_CPU)
    else:
        dev = lib_function("ggml_backend_dev_by_name", ctypes.c_void_p, [ctypes.c_char_p])(device.encode())
    if not dev:
        raise EdgeAIError(f"this llama.cpp build has no device {device!r}; use CPU or a device it lists at load")
    buft = lib_function("ggml_backend_dev_buffer_type", ctypes.c_void_p, [ctypes.c_void_p])(dev)
    if not buft:
        raise EdgeAIError(f"llama.cpp device {device!r} has no buffer type")
    return buft


def check_patterns(info: GGUFInfo, overrides: Sequence[tuple[str, str]]) -> None:
    """Refuse a pattern that is not a regex or matches none of the model's tensors (a typo would
    otherwise load the model with nothing moved and no word said)."""
    names = [t.name for t in info.tensors]
    for pattern, _ in overrides:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise EdgeAIError(f"tensor override {pattern!r} is not a regular expression ({exc})") from None
        if not any(regex.search(name) for name in names):
            raise EdgeAIError(f"tensor override {pattern!r} matches no tensor of {info.path.name}; "
                              "list the names with `edge-ai models info`")


class Overrides:
    """The NULL-terminated override array and the memory it points to."""

    def __init__(self, overrides: Sequence[tuple[str, str]]) -> None:
        self.patterns = [pattern.encode() for pattern, _ in overrides]
        self.array = (BuftOverride * (len(overrides) + 1))()  # the last entry stays {NULL, NULL}
        for entry, pattern, (_, device) in zip(self.array, self.patterns, overrides, strict=False):
            entry.pattern = pattern
            entry.buft = buffer_type(device)

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)


@contextlib.contextmanager
def applied(info: GGUFInfo | None, overrides: Sequence[tuple[str, str]]) -> Iterator[Overrides | None]:
    """Within the block, `llama_cpp.Llama(...)` loads `info`'s model with `overrides` ((regex, device) pairs)."""
    if not overrides:
        yield None
        return
    assert info is not None, "overrides are checked against the model's tensors"
    check_patterns(info, overrides)
    table = Overrides(overrides)
    with patched_defaults("llama_model_default_params", lambda p: setattr(p, "tensor_buft_overrides", table.address)):
        yield table

class _TensorHead(ctypes.Structure):
    """The leading fields of struct ggml_tensor (ggml.h), stable across ggml versions: type, buffer, ne, nb."""

    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4)]


class TensorTap:
    """Reads the int32 tensors named `prefix<layer>` as llama.cpp computes them (its eval callback).

    llama.cpp asks the callback, node by node, whether it wants a tensor (ask=True), then calls it
    again once the tensor is computed (ask=False): only then is the data valid, so it is copied out
    right away. `rows[layer]` collects (n_tokens, ne0) arrays; a view's rows may be strided (the MoE
    top-k is a view of an n_expert-wide argsort), so nb[1] is honoured."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.rows: dict[int, list[list[int]]] = {}
        self._get_name = lib_function("ggml_get_name", ctypes.c_char_p, [ctypes.c_void_p])
        self._tensor_get = lib_function("ggml_backend_tensor_get", None,
                                     [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t])
        self.callback = llama_lib.ggml_backend_sched_eval_callback(self._on_tensor)

    def _on_tensor(self, tensor: int, ask: bool, _user_data: int) -> bool:
        name = self._get_name(tensor) or b""
        if not name.startswith(self.prefix):
            return not ask  # ask: not wanted; computed: keep going
        if ask:
            return True
        head = _TensorHead.from_address(tensor)
        width, n_rows, stride = head.ne[0], head.ne[1], head.nb[1]
        size = (n_rows - 1) * stride + width * 4
        buf = (ctypes.c_int32 * (size // 4 + 1))()
        self._tensor_get(tensor, buf, 0, size)
        step = stride // 4
        layer = int(name[len(self.prefix):])
        self.rows.setdefault(layer, []).extend(list(buf[r * step:r * step + width]) for r in range(n_rows))
        return True


@contextlib.contextmanager
def tapped(tap: TensorTap) -> Iterator[TensorTap]:
    """Within the block, `llama_cpp.Llama(...)` creates its context with `tap` as the eval callback.
    The context keeps calling it: keep `tap` alive as long as the Llama."""
    with patched_defaults("llama_context_default_params", lambda p: setattr(p, "cb_eval", tap.callback)):
        yield tap


@contextlib.contextmanager
def patched_defaults(name: str, edit: Callable[[Any], None]) -> Iterator[None]:
    """Within the block, llama_cpp's `name()` (the default model or context params `Llama` starts
    from) returns its defaults changed by `edit`."""
    original = getattr(llama_lib, name)

    def patched() -> Any:
        params = original()
        edit(params)
        return params

    with _patch_lock:
        setattr(llama_lib, name, patched)
        try:
            yield
        finally:
            setattr(llama_lib, name, original)

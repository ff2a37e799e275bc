"""`edge-ai rpc-server`: lend this machine's memory and CPU to a model that fits no single machine.

Thin: checks the flags and the port, warns about exposure, and runs llama.cpp's RPC server in this
process (runtime.llamacpp.rpc). Another machine then loads a model with `--rpc HOST:PORT` and puts
some of its layers here.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Optional

import typer

from edge_ai.console import err
from edge_ai.errors import EdgeAIError
from edge_ai.rpc_servers import DEFAULT_PORT

MIB = 1024**2


def _address(host: str) -> ipaddress.IPv4Address:
    """ggml's server binds an IPv4 address given as digits (inet_addr): no names, no IPv6."""
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        raise EdgeAIError(f"--host {host!r} is not an IPv4 address; give one of this machine's addresses, "
                          "e.g. 192.168.1.20 (or 0.0.0.0 for every interface)") from None


def rpc_server_cmd(
    host: Annotated[str, typer.Option("--host", help="IPv4 address to listen on (default: loopback only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on")] = DEFAULT_PORT,
    mem: Annotated[Optional[int], typer.Option(
        "--mem", help="MiB to offer clients: they split layers by it (default: the free RAM when they ask)")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: physical cores)")] = None,
) -> None:
    """Serve llama.cpp's RPC backend: clients (`--rpc HOST:PORT`) keep some of a model's layers here."""
    from edge_ai.hardware import default_threads
    from runtime.llamacpp.rpc import Server, check_port

    address = _address(host)
    if not 1 <= port <= 65535:
        raise EdgeAIError(f"--port {port} is not a TCP port (1-65535)")
    if mem is not None and mem < 1:
        raise EdgeAIError(f"--mem {mem} must be a positive number of MiB")
    if threads is not None and threads < 1:
        raise EdgeAIError(f"--threads {threads} must be a positive number")
    check_port(host, port)
    server = Server(host, port, threads=threads or default_threads(), memory=mem * MIB if mem else None)
    if not address.is_loopback:
        err.print(f"warning: listening on {host}, beyond this machine. llama.cpp's RPC protocol has no authentication "
                  "and no encryption: anyone who reaches this port can use this machine's memory and CPU and see "
                  "the model's weights and activations. Serve only a network you trust, never the internet.",
                  soft_wrap=True)
    offer = f"{mem} MiB" if mem else "the free RAM"
    reach = "THIS-MACHINE" if address.is_unspecified else host
    err.print(f"RPC server on {host}:{port}, {server.threads} threads, offering {offer}; "
              f"clients load with --rpc {reach}:{port}. Ctrl-C stops it.", soft_wrap=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        err.print("stopped")


def register(app: typer.Typer) -> None:
    """Add `rpc-server` to the main `edge-ai` app."""
    app.command("rpc-server")(rpc_server_cmd)

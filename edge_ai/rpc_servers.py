"""The `host:port` list of llama.cpp RPC servers a model is spread over (`--rpc`, `model.rpc`).

Checked here, before llama.cpp sees it: ggml's RPC client aborts the whole process on an endpoint it
cannot parse or reach, so a typo must become one line naming it. ggml splits an endpoint at its first
':' and connects over IPv4, so a host is a name or an IPv4 address (no IPv6 brackets).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from edge_ai.errors import EdgeAIError

DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
MAX_SERVERS = 16  # GGML_RPC_MAX_SERVERS
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def parse_servers(value: str | Sequence[str], source: str = "--rpc") -> tuple[str, ...]:
    """('host:port', ...) from "a:50052,b:50052" or a list of such strings; `source` (a flag or a
    setting) names where a bad list came from."""
    items = value.split(",") if isinstance(value, str) else [part for item in value for part in item.split(",")]
    servers = tuple(item.strip() for item in items if item.strip())
    if not servers:
        raise EdgeAIError(f"{source}: no server given; write host:port, e.g. 192.168.1.20:50052,192.168.1.21:50052")
    for server in servers:
        host, sep, port = server.partition(":")
        if not sep or not _HOST.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise EdgeAIError(f"{source}: {server!r} is not host:port (a name or IPv4 address, a port 1-65535), "
                                 f"e.g. 127.0.0.1:{DEFAULT_PORT}")
    if len(set(servers)) != len(servers):
        raise EdgeAIError(f"{source}: a server is listed twice in {','.join(servers)}")
    if len(servers) > MAX_SERVERS:
        raise EdgeAIError(f"{source}: {len(servers)} servers given; llama.cpp takes at most {MAX_SERVERS}")
    return servers


def split_endpoint(server: str) -> tuple[str, int]:
    """('host', port) of a server `parse_servers` accepted."""
    host, _, port = server.partition(":")
    return host, int(port)

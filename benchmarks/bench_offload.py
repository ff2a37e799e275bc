"""MoE offloading: decode tok/s with everything in one buffer vs the planned placement; prints JSON.

The model: `--model PATH` (a mixture-of-experts GGUF), else a small random Qwen3-MoE (16 experts,
2 per token, 4 layers, width 512, q8_0) built with the test suite's checkpoint builder (needs the
`convert` extra) and converted by our converter. Three loads of it, decoded greedily from the same
prompt in alternating rounds (best round each, like timeit: on a shared machine interference only
adds time):
- `all_in_one`: llama.cpp's default placement (every weight in the CPU buffer, repacked where it can);
- `planned`: what `edge-ai plan` chooses for the free RAM (and applies with --apply);
- `cpu_moe`: every routed expert overridden to the plain CPU buffer type (what a GPU machine does
  with experts that do not fit), to show the price of the override itself on a CPU-only machine.
The plan's tok/s estimate (from measured bandwidth) is printed beside the measurements.

A GPU section runs when llama.cpp reports GPU offload support (a CUDA/Metal/Vulkan build); here it
says plainly when it does not.

The memory-cgroup case (`--cgroup`, root and cgroup v1's memory controller needed): a bigger random
Qwen3-MoE (32 experts of width 768, q8_0, ~160 MB) decoded in a child process whose memory cgroup
allows half the file size, so the kernel must page the model from disk: plain mmap (llama.cpp's
default) vs the plan for that budget (mmap-paged: the always-used weights and the profile's hot
experts locked with mlock, the cold experts paged). The file is dropped from the page cache
(posix_fadvise DONTNEED) before each run so the child's cgroup is charged for what it reads.
Target there: planned / plain >= 1.3 (the issue's); reported, not enforced (disk and host vary).
Measured on 2 shared cores: 1.25 (1 round of 16 tokens), then 0.88 (2 rounds of 12): not met. The
limit leaves room for only 2 hot experts of 128 beside the buffers, a random router spreads its
picks almost evenly (they served 7%), and the kernel's LRU already keeps the always-used pages
(3.8 MiB) that every token touches; a real model's skewed routing is what hot experts are for.
Target: planned / all_in_one >= 0.95 (the plan never costs speed where everything fits). Exits 1
when missed.

    python benchmarks/bench_offload.py [--model PATH | --workdir DIR] [--rounds 5] [--tokens 64] [--cgroup]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from edge_ai.gguf_file import read_gguf
from edge_ai.tensor_roles import weights
from runtime.llamacpp.system import build
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import DoneEvent, SamplingParams
from runtime.planner.bandwidth import measure_read_bandwidth
from runtime.planner.plan import Budget, Request, expert_overrides, make_plan
from runtime.planner.profile import require_moe

TARGET_RATIO = 0.95
PROMPT = "The old lighthouse keeper climbed the stairs every evening and"
SMALL_MOE = dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                 num_experts=16, num_experts_per_tok=2, moe_intermediate_size=512, max_position_embeddings=2048)


def build_model(folder: Path) -> Path:
    """A small random Qwen3-MoE, converted to q8_0 by our converter."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "convert"))
    from tiny_hf_more import build_more

    from convert.gguf import convert_checkpoint

    checkpoint = build_more("qwen3moe", folder / "hf", **SMALL_MOE)
    return convert_checkpoint(checkpoint.path, folder / "moe-q8_0.gguf", outtype="q8_0").output


BIG_MOE = {**SMALL_MOE, "num_experts": 32, "moe_intermediate_size": 768}
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
CGROUP_CTX = 512


def build_big_model(folder: Path) -> Path:
    """The cgroup case's model: ~160 MB of q8_0, nearly all of it routed experts."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "convert"))
    from tiny_hf_more import build_more

    from convert.gguf import convert_checkpoint

    target = folder / "big-moe-q8_0.gguf"
    if target.exists():
        return target
    checkpoint = build_more("qwen3moe", folder / "hf-big", shard_size="2GB", **BIG_MOE)
    return convert_checkpoint(checkpoint.path, target, outtype="q8_0").output


def _drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _child(path: Path, options_json: str, tokens: int) -> None:
    """In the cgroup: load with the given EngineOptions fields, decode, print tok/s and peak memory."""
    fields = json.loads(options_json)
    fields["tensor_overrides"] = tuple(tuple(o) for o in fields.get("tensor_overrides", ()))
    fields["hot_experts"] = tuple((int(il), tuple(es)) for il, es in fields.get("hot_experts", ()))
    rate = decode_rate(path, EngineOptions(**fields), tokens)
    print(json.dumps({"decode_tok_s": rate}))


def cgroup_case(work: Path, tokens: int, rounds: int) -> dict[str, object]:
    """Plain mmap vs the plan under a memory limit of half the model file (module docstring)."""
    if os.geteuid() != 0 or not (CGROUP_ROOT / "memory.limit_in_bytes").exists():
        return {"run": False, "why": "needs root and cgroup v1's memory controller at /sys/fs/cgroup/memory"}
    from runtime.planner.profile import run_profile

    path = build_big_model(work)
    info = read_gguf(path)
    limit = info.file_size // 2
    profile = run_profile(info, (PROMPT + " ") * 40, n_ctx=CGROUP_CTX)
    plan = make_plan(info, Budget(ram=limit), Request(ctx=CGROUP_CTX, n_ubatch=64), profile=profile)
    base = {"context": CGROUP_CTX, "batch": 64}
    configs = {"plain_mmap": base, "planned": {**base, **plan.load_options()}}
    group = CGROUP_ROOT / f"edge-ai-bench-{os.getpid()}"
    group.mkdir()
    rates: dict[str, list[float]] = {name: [] for name in configs}
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        for _ in range(rounds):
            for name, options in configs.items():
                _drop_from_page_cache(path)
                (group / "memory.max_usage_in_bytes").write_text("0")
                run = subprocess.run(
                    [sys.executable, __file__, "--child", str(path), json.dumps(options), str(tokens)],
                    capture_output=True, text=True, timeout=600,
                    preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
                if run.returncode != 0:
                    raise SystemExit(f"{name} under the cgroup failed: {run.stderr.strip().splitlines()[-1:]}")
                rates[name].append(json.loads(run.stdout.strip().splitlines()[-1])["decode_tok_s"])
    finally:
        group.rmdir()
    best = {name: max(values) for name, values in rates.items()}
    return {"run": True, "model": str(path), "file_bytes": info.file_size, "limit_bytes": limit,
            "plan_mode": plan.mode, "locked_always_used_and_hot": plan.mode == "mmap-paged",
            "hot_experts_per_layer": {il: len(es) for il, es in plan.hot_experts.items()},
            "hot_routing_share": plan.resident_routing_share, "decode_tok_s_best": best, "decode_tok_s_all": rates,
            "planned_over_plain_mmap": best["planned"] / best["plain_mmap"], "target": "planned / plain_mmap >= 1.3"}


def decode_rate(path: Path, options: EngineOptions, tokens: int) -> float:
    """Greedy decode tok/s over exactly `tokens` tokens (end-of-generation banned: a random model
    would otherwise stop after a token or two and leave nothing to time)."""
    eos = read_gguf(path).metadata["tokenizer.ggml.eos_token_id"]
    engine = Engine(path, options=options)
    try:
        sampling = SamplingParams(temperature=0.0, max_tokens=tokens, logit_bias=((eos, -100.0),))
        done = [e for e in engine.complete(PROMPT, sampling) if isinstance(e, DoneEvent)]
    finally:
        engine.close()
    metrics = done[0].metrics
    if metrics.generated_tokens != tokens:
        raise SystemExit(f"decoded {metrics.generated_tokens} tokens instead of {tokens}: nothing comparable")
    return metrics.decode_tok_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--workdir", type=Path, help="build the model here and keep it (default: a temp dir)")
    parser.add_argument("--cgroup", action="store_true", help="also run the memory-cgroup case (root)")
    parser.add_argument("--cgroup-only", action="store_true", help="run only the memory-cgroup case")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # internal: one run inside the cgroup
    args = parser.parse_args()
    if args.child:
        _child(Path(args.child[0]), args.child[1], int(args.child[2]))
        return
    if args.cgroup_only:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps({"cgroup_mmap_case": cgroup_case(args.workdir or Path(tmp), args.tokens, args.rounds)},
                             indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        built = work / "moe-q8_0.gguf"
        path = args.model or (built if built.exists() else build_model(work))
        info = read_gguf(path)
        require_moe(info)
        plan = make_plan(info, Budget(ram=psutil.virtual_memory().available,
                                      gpu_backend=build()[1]), Request(ctx=1024))
        base = EngineOptions(context=1024, batch=256)
        planned = dict(plan.load_options())
        planned["tensor_overrides"] = tuple(tuple(o) for o in planned["tensor_overrides"])
        all_experts = tuple(expert_overrides(weights(info).expert_layers))
        configs = {"all_in_one": base, "planned": dataclasses.replace(base, **planned),
                   "cpu_moe": dataclasses.replace(base, tensor_overrides=all_experts)}
        rates: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, options in configs.items():
                rates[name].append(decode_rate(path, options, args.tokens))
        best = {name: max(values) for name, values in rates.items()}
        slow, fast = plan.tokens_per_second(measure_read_bandwidth()) or (0.0, 0.0)
        ratio = best["planned"] / best["all_in_one"]
        gpu = build()[1]  # a GPU device: an RPC build also reports offload support
        report = {
            "model": str(path), "file_bytes": info.file_size, "plan_mode": plan.mode, "plan_ctx": plan.ctx,
            "decode_tok_s_best": best, "decode_tok_s_all": rates,
            "planned_over_all_in_one": ratio, "cpu_moe_over_all_in_one": best["cpu_moe"] / best["all_in_one"],
            "estimated_tok_s": {"full_context": slow, "empty_context": fast,
                                "source": "plan: measured one-thread read bandwidth / bytes per token"},
            "gpu": ("GPU build: this version plans for free RAM only, no offload measured" if gpu
                    else "not run: this llama.cpp build reports no GPU offload support"),
            "cgroup_mmap_case": (cgroup_case(work, args.tokens, args.rounds) if args.cgroup
                                 else {"run": False, "why": "pass --cgroup (root) to measure it"}),
            "target": f"planned / all_in_one >= {TARGET_RATIO}", "meets_target": ratio >= TARGET_RATIO,
        }
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["meets_target"] else 1)


if __name__ == "__main__":
    main()

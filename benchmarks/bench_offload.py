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
says plainly when it does not. The memory-cgroup case (a model twice the size of a memory limit,
plain mmap vs resident hot experts) is not measured by this version.
Target: planned / all_in_one >= 0.95 (the plan never costs speed where everything fits). Exits 1
when missed.

    python benchmarks/bench_offload.py [--model PATH | --workdir DIR] [--rounds 5] [--tokens 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import llama_cpp
import psutil

from edge_ai.gguf_file import read_gguf
from edge_ai.tensor_roles import weights
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        built = work / "moe-q8_0.gguf"
        path = args.model or (built if built.exists() else build_model(work))
        info = read_gguf(path)
        require_moe(info)
        plan = make_plan(info, Budget(ram=psutil.virtual_memory().available,
                                      gpu_backend=bool(llama_cpp.llama_supports_gpu_offload())), Request(ctx=1024))
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
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        report = {
            "model": str(path), "file_bytes": info.file_size, "plan_mode": plan.mode, "plan_ctx": plan.ctx,
            "decode_tok_s_best": best, "decode_tok_s_all": rates,
            "planned_over_all_in_one": ratio, "cpu_moe_over_all_in_one": best["cpu_moe"] / best["all_in_one"],
            "estimated_tok_s": {"full_context": slow, "empty_context": fast,
                                "source": "plan: measured one-thread read bandwidth / bytes per token"},
            "gpu": ("GPU build: this version plans for free RAM only, no offload measured" if gpu
                    else "not run: this llama.cpp build reports no GPU offload support"),
            "cgroup_mmap_case": "not measured by this version",
            "target": f"planned / all_in_one >= {TARGET_RATIO}", "meets_target": ratio >= TARGET_RATIO,
        }
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["meets_target"] else 1)


if __name__ == "__main__":
    main()

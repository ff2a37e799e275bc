"""Distillation: the default gemma3-270m (GGUF, dequantized by transformers) as teacher -> a 9-layer
student on a fixed text for N steps, shipped as Q4_K_M; prints JSON.

Reports training tokens/s, the held-out KLD to the teacher of the distilled student vs the
undistilled 9-layer initialisation (both quantized alike), GGUF sizes, and decode tok/s of
teacher vs student. Targets, as ratios within this run: the student decodes >= 1.3x faster than
the teacher, and distillation lowers the KLD below the init's; exits 1 when missed.

    python benchmarks/bench_distill.py [--model gemma3-270m] [--layers 9] [--steps 20] [--length 128]

With --train-options it measures the training loop's memory/speed options instead: the same
student trained for --steps steps in one child process per variant (fp32, gradient checkpointing,
bf16 autocast, both), each reporting its mean step time (first step excluded) and the peak RSS
reached while training (the kernel's high-water mark, reset after loading); prints the ratios to
fp32. Targets: gradient checkpointing lowers the training peak, bf16 autocast lowers the step time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convert.distill.losses import LossOptions
from convert.distill.pipeline import DistillOptions, distill
from convert.distill.train import TrainOptions, train
from edge_ai import registry

TARGET_DECODE_SPEEDUP = 1.3
ROOT = Path(__file__).resolve().parent.parent
TRAIN_TEXT = ROOT / "README.md"  # real prose, fixed with the commit
EVAL_TEXT = Path("/work/shared/GUIDE.md") if Path("/work/shared/GUIDE.md").is_file() else ROOT / "pyproject.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--length", type=int, default=128, help="tokens per training row")
    parser.add_argument("--quantize", default="Q4_K_M")
    parser.add_argument("--train-options", action="store_true", help="compare checkpointing / bf16 autocast")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one child of --train-options
    args = parser.parse_args()
    if args.variant:
        return measure_variant(args)
    if args.train_options:
        return compare_variants(args)

    teacher = Path(registry.resolve(args.model))
    options = DistillOptions(train=TrainOptions(steps=args.steps, batch_size=2, lr=2e-4, loss=LossOptions()),
                             student_layers=args.layers, max_length=args.length, quantize=args.quantize,
                             eval_ctx=128, eval_chunks=4)
    with tempfile.TemporaryDirectory(prefix="edge-ai-bench-distill-") as work:
        start = time.perf_counter()
        report = distill(teacher, TRAIN_TEXT, Path(work), options,
                         eval_text=EVAL_TEXT.read_text(encoding="utf-8"))
        seconds = time.perf_counter() - start
    tokens = sum(step["tokens"] for step in report.steps)
    train_seconds = sum(step["seconds"] for step in report.steps)
    models = report.models
    decode_speedup = models["student"]["decode_tps"] / models["teacher"]["decode_tps"]
    kld_ratio = models["student"]["kld_mean"] / models["init"]["kld_mean"]
    meets_target = decode_speedup >= TARGET_DECODE_SPEEDUP and kld_ratio < 1.0
    print(json.dumps({
        "teacher": args.model, "student_layers": report.keep_layers, "steps": args.steps, "quantize": report.quantize,
        "train_tokens": tokens, "train_tokens_per_s": round(tokens / train_seconds, 1), "total_s": round(seconds, 1),
        "kld_init": round(models["init"]["kld_mean"], 4), "kld_student": round(models["student"]["kld_mean"], 4),
        "kld_ratio_student_vs_init": round(kld_ratio, 3),
        "top1_init": round(models["init"]["top1"], 1), "top1_student": round(models["student"]["top1"], 1),
        "gguf_mib": {name: round(row["size_mib"], 1) for name, row in models.items()},
        "decode_tps": {name: round(row["decode_tps"], 1) for name, row in models.items()},
        "decode_speedup_student_vs_teacher": round(decode_speedup, 2),
        "target_decode_speedup": TARGET_DECODE_SPEEDUP, "meets_target": meets_target,
    }, indent=2))
    raise SystemExit(0 if meets_target else 1)


VARIANTS = {"fp32": {}, "grad_checkpointing": {"grad_checkpointing": True}, "bf16": {"autocast": "bf16"},
            "bf16+grad_checkpointing": {"autocast": "bf16", "grad_checkpointing": True}}


def _status_mib(key: str) -> float:
    """A /proc/self/status memory line (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def measure_variant(args: argparse.Namespace) -> None:
    """Child process: train the student with one variant's options; print its step time and peaks."""
    from convert.distill.data import load_examples, make_blocks
    from convert.distill.gguf_teacher import load_gguf_teacher
    from convert.distill.student import build_student, decoder_layers, uniform_layers

    tokenizer, teacher = load_gguf_teacher(Path(registry.resolve(args.model)))
    student = build_student(teacher, uniform_layers(len(decoder_layers(teacher)), args.layers))
    blocks = make_blocks(load_examples(TRAIN_TEXT, tokenizer), args.length, pack=True, pad_id=tokenizer.pad_token_id)
    options = TrainOptions(steps=args.steps, batch_size=2, lr=2e-4, **VARIANTS[args.variant])
    before = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: loading (dequantizing) must not count
    with tempfile.TemporaryDirectory() as work:
        log = train(teacher, student, blocks, options, Path(work))
    seconds = [step.seconds for step in log[1:]] or [log[0].seconds]
    print(json.dumps({"step_s": sum(seconds) / len(seconds), "rss_before_mib": before,
                      "train_peak_mib": _status_mib("VmHWM"), "losses": [round(s.loss, 4) for s in log]}))


def compare_variants(args: argparse.Namespace) -> None:
    """Run every variant in its own process (peak memory is per process) and print the ratios."""
    results = {}
    for name in VARIANTS:
        child = subprocess.run([sys.executable, __file__, "--variant", name, "--model", args.model, "--layers",
                                str(args.layers), "--steps", str(args.steps), "--length", str(args.length)],
                               capture_output=True, text=True, check=True)
        results[name] = json.loads(child.stdout.strip().splitlines()[-1])
    base = results["fp32"]
    for row in results.values():
        row["step_time_vs_fp32"] = round(row["step_s"] / base["step_s"], 3)
        row["train_peak_growth_vs_fp32"] = round((row["train_peak_mib"] - row["rss_before_mib"])
                                                 / (base["train_peak_mib"] - base["rss_before_mib"]), 3)
    meets = (results["grad_checkpointing"]["train_peak_growth_vs_fp32"] < 1.0
             and results["bf16"]["step_time_vs_fp32"] < 1.0)
    print(json.dumps({"teacher": args.model, "student_layers": args.layers, "steps": args.steps,
                      "rows": 2, "length": args.length, "variants": results, "meets_target": meets}, indent=2))
    raise SystemExit(0 if meets else 1)


if __name__ == "__main__":
    main()

"""Distillation: the default gemma3-270m (GGUF, dequantized by transformers) as teacher -> a 9-layer
student on a fixed text for N steps, shipped as Q4_K_M; prints JSON.

Reports training tokens/s, the held-out KLD to the teacher of the distilled student vs the
undistilled 9-layer initialisation (both quantized alike), GGUF sizes, and decode tok/s of
teacher vs student. Targets, as ratios within this run: the student decodes >= 1.3x faster than
the teacher, and distillation lowers the KLD below the init's; exits 1 when missed.

    python benchmarks/bench_distill.py [--model gemma3-270m] [--layers 9] [--steps 20] [--length 128]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from convert.distill.losses import LossOptions
from convert.distill.pipeline import DistillOptions, distill
from convert.distill.train import TrainOptions
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()

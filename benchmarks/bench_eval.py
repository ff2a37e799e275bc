"""Quantization sweep evaluation: several models against one reference, together vs one by one; prints JSON.

Requantizes the default model (or --model) to --types, then scores them against the source on the
same text twice in one run: one `evaluate` per model (the reference decodes the text once per model)
and one `evaluate_many` (the reference decodes it once for all). Both give the same numbers; the
ratio of the times is what sharing the reference pass saves. With a reference as fast as the
quantized models the ideal is 2N / (N + 1) (1.5 for three types); a slower f16 reference saves more.
Target: speedup >= 1.3 for three types; exits 1 when missed or when the two disagree.

    python benchmarks/bench_eval.py [--model PATH] [--types Q4_0,Q5_0,Q8_0] [--chunks 6] [--ctx 256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from convert.evaluate import evaluate, evaluate_many
from convert.quantize import quantize
from edge_ai import registry

TARGET_SPEEDUP = 1.3
TEXT = Path(__file__).resolve().parent.parent / "README.md"  # a few thousand words of real prose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--types", default="Q4_0,Q5_0,Q8_0")
    parser.add_argument("--chunks", type=int, default=6)
    parser.add_argument("--ctx", type=int, default=256)
    args = parser.parse_args()

    source = Path(registry.resolve(args.model))
    text = TEXT.read_text(encoding="utf-8") * 3
    with tempfile.TemporaryDirectory(prefix="edge-ai-bench-eval-") as work:
        outputs = [quantize(source, Path(work) / f"model-{t}.gguf", t).dst for t in args.types.split(",")]
        options = dict(reference=source, ctx=args.ctx, max_chunks=args.chunks, threads=0, speed=False)
        start = time.perf_counter()
        alone = [evaluate(path, text, **options) for path in outputs]
        middle = time.perf_counter()
        together = evaluate_many(outputs, text, **options)
        end = time.perf_counter()
    speedup = (middle - start) / (end - middle)
    same = all(abs(a.kld_mean - b.kld_mean) <= 1e-6 * max(a.kld_mean, 1e-12) and a.top1 == b.top1
               for a, b in zip(alone, together))
    meets_target = speedup >= TARGET_SPEEDUP and same
    print(json.dumps({
        "model": args.model, "types": args.types.split(","), "chunks": args.chunks, "ctx": args.ctx,
        "one_by_one_s": round(middle - start, 2), "together_s": round(end - middle, 2),
        "speedup": round(speedup, 2), "same_results": same,
        "kld_mean": {path.stem: round(r.kld_mean, 5) for path, r in zip(outputs, together)},
        "target_speedup": TARGET_SPEEDUP, "meets_target": meets_target,
    }, indent=2))
    raise SystemExit(0 if meets_target else 1)


if __name__ == "__main__":
    main()

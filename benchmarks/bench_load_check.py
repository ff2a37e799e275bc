"""The cost of loading a new model file in a child process first; prints JSON.

A file edge-ai has not loaded before is loaded once in a throw-away process (runtime/llamacpp/load.py)
so a native abort cannot kill the app; after that the file is known to load and the check is
skipped. This times opening the engine both ways on the same file, alternating rounds (the first
load with the "loads fine" cache emptied, then a later load with it filled), and reports the best
round of each (like timeit) and the medians. Target: the first load costs at most 3x a later one
(the child is one extra load plus a Python start); exits 1 when missed.

    python benchmarks/bench_load_check.py [--model PATH] [--rounds 5] [--context 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--context", type=int, default=4096)
    args = parser.parse_args()
    path = _resolve(args.model)  # before EDGE_AI_HOME moves: the user's registry knows the model
    os.environ["EDGE_AI_HOME"] = tempfile.mkdtemp(prefix="bench-load-check-")  # an empty cache of our own

    from edge_ai.paths import get_paths
    from runtime.llm.engine import Engine, EngineOptions

    cache = get_paths().data_dir / "loads-fine.json"
    options = EngineOptions(context=args.context)

    def open_engine() -> float:
        start = time.perf_counter()
        Engine(path, options=options).close()
        return time.perf_counter() - start

    open_engine()  # warm the page cache so both sides read the file from memory
    first, later = [], []
    for _ in range(args.rounds):
        cache.unlink(missing_ok=True)
        first.append(open_engine())
        later.append(open_engine())
    ratio = min(first) / min(later)
    print(json.dumps({
        "model": path.name, "context": args.context, "rounds": args.rounds,
        "first_load_s": round(min(first), 3), "later_load_s": round(min(later), 3),
        "first_load_median_s": round(statistics.median(first), 3),
        "later_load_median_s": round(statistics.median(later), 3),
        "child_check_cost_s": round(min(first) - min(later), 3),
        "first_over_later": round(ratio, 2), "target_max": TARGET_RATIO, "ok": ratio <= TARGET_RATIO,
    }, indent=2))
    return 0 if ratio <= TARGET_RATIO else 1


def _resolve(model: str) -> Path:
    from edge_ai import registry

    return registry.resolve(model)


if __name__ == "__main__":
    raise SystemExit(main())

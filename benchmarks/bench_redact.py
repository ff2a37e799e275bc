"""PII redaction measured on the labelled set (tests/screen/pii_cases.py); prints JSON.

    python benchmarks/bench_redact.py [--repeat 20]

recall per kind and overall: a secret counts as caught when one finding of its kind covers all of it
(targets: overall >= 0.98, card and key 1.0). False positives: findings in the ordinary paragraphs,
per 1000 words (target < 1). Speed: words per second of redact() over the whole set (cases and
ordinary text), best of --repeat runs, on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "screen"))

from pii_cases import CASES, ORDINARY  # noqa: E402

from runtime.screen.redact import KINDS, find  # noqa: E402


def recall() -> tuple[dict[str, float], float, list[dict[str, str]]]:
    """Recall per kind, overall, and what was missed (kind, format)."""
    total, caught, missed = Counter(), Counter(), []
    for case in CASES:
        findings = find(case.text)
        for secret in case.secrets:
            start = case.text.index(secret)
            total[case.kind] += 1
            if any(f.kind == case.kind and f.start <= start and f.end >= start + len(secret) for f in findings):
                caught[case.kind] += 1
            else:
                missed.append({"kind": case.kind, "format": case.fmt})
    per_kind = {kind: round(caught[kind] / total[kind], 4) for kind in KINDS if total[kind]}
    return per_kind, round(sum(caught.values()) / sum(total.values()), 4), missed


def false_positives() -> tuple[int, int, list[dict[str, str]]]:
    """Findings in the ordinary text (kind and the text found), and its word count."""
    found = [{"kind": f.kind, "text": text[f.start:f.end]} for text in ORDINARY for f in find(text)]
    return len(found), sum(len(text.split()) for text in ORDINARY), found


def speed(repeat: int) -> tuple[float, int]:
    """Words per second over every text of the set, best of `repeat` runs."""
    texts = [case.text for case in CASES] + list(ORDINARY)
    words = sum(len(text.split()) for text in texts)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for text in texts:
            find(text)
        best = min(best, time.perf_counter() - start)
    return words / best, words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed passes over the set (the best counts)")
    args = parser.parse_args()
    per_kind, overall, missed = recall()
    fp, words, fp_found = false_positives()
    words_per_s, timed_words = speed(args.repeat)
    fp_per_1000 = round(fp / words * 1000, 3)
    print(json.dumps({
        "cases": len(CASES), "secrets": sum(len(c.secrets) for c in CASES),
        "recall": per_kind, "recall_overall": overall, "missed": missed,
        "ordinary_words": words, "false_positives": fp, "false_positives_per_1000_words": fp_per_1000,
        "false_positive_findings": fp_found,
        "words_per_second": round(words_per_s), "timed_words": timed_words,
        "targets_met": {"recall_overall>=0.98": overall >= 0.98,
                        "card==1.0": per_kind.get("card") == 1.0, "key==1.0": per_kind.get("key") == 1.0,
                        "fp_per_1000_words<1": fp_per_1000 < 1},
    }, indent=2))


if __name__ == "__main__":
    main()

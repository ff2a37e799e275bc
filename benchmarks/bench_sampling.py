"""What the server's per-request controls cost in decode speed, measured in one run; prints JSON.

One engine, one prompt; each round decodes the same number of tokens plainly, with log-probabilities
(20 alternatives per token, the most OpenAI allows), with a logit bias, and under a JSON-schema
grammar. Rounds alternate the variants so machine noise hits all alike; ratios use each variant's
best round over the plain one's. Targets: logprobs and logit bias >= 0.9 of plain decode speed;
the grammar (checked on the chosen token, over the whole vocabulary only when it refuses it)
>= 0.5. Exits 1 when a target is missed.

    python benchmarks/bench_sampling.py [--model PATH] [--rounds 5] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from edge_ai import registry
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import DoneEvent, SamplingParams
from runtime.llm.grammar import json_grammar

SCHEMA = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}},
          "required": ["items"], "additionalProperties": False}
TARGETS = {"logprobs": 0.9, "logit_bias": 0.9, "grammar": 0.5}


def decode_rate(engine: Engine, sampling: SamplingParams) -> tuple[float, int]:
    """The engine's decode tokens per second for one reply, and how many tokens it made."""
    done = [e for e in engine.complete("A long list of fruits, as JSON:", sampling) if isinstance(e, DoneEvent)][0]
    return done.metrics.decode_tok_s, done.metrics.generated_tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m", help="model name or .gguf path")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    path = Path(registry.resolve(args.model))
    engine = Engine(path, options=EngineOptions(context=1024))
    base = {"temperature": 0.0, "repeat_penalty": 1.0, "max_tokens": args.tokens}
    variants = {
        "plain": SamplingParams(**base),
        "logprobs": SamplingParams(**base, logprobs=20),
        "logit_bias": SamplingParams(**base, logit_bias=tuple((i, -5.0) for i in range(1000, 1100))),
        "grammar": SamplingParams(**base, grammar=json_grammar(SCHEMA)),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    tokens: dict[str, int] = {}
    decode_rate(engine, variants["plain"])  # warm-up
    for _ in range(args.rounds):
        for name, sampling in variants.items():
            rate, tokens[name] = decode_rate(engine, sampling)
            rates[name].append(rate)
    best = {name: max(r) for name, r in rates.items()}
    ratios = {name: best[name] / best["plain"] for name in TARGETS}
    report = {
        "model": path.name, "threads": engine.threads, "rounds": args.rounds, "tokens": tokens,
        "decode_tok_s_best": {k: round(v, 1) for k, v in best.items()},
        "decode_tok_s_median": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "ratio_to_plain": {k: round(v, 3) for k, v in ratios.items()},
        "targets": TARGETS,
        "met": all(ratios[k] >= t for k, t in TARGETS.items()),
    }
    print(json.dumps(report, indent=2))
    engine.close()
    return 0 if report["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

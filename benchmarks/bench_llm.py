"""Engine overhead vs raw llama-cpp-python, and a long conversation past the context; prints JSON.

Both sides load the same GGUF with the same context, batch and threads, get the same prompt
tokens (a distinct prompt per round so neither reuses a cached prefix) and decode greedily.
Rounds alternate engine / raw so machine noise hits both alike. The ratios use each side's best
round (like timeit: on a shared machine, interference only ever adds time); medians are printed too.
Target: engine decode tok/s and TTFT within 3 % of raw (ratios >= 0.97). The engine side uses
the built-in turn format so that, like raw, it runs to `--tokens` (the overhead, not the format,
is measured).

Then a scripted `--turns`-turn conversation at a small `--fill-context`, in the model's own format:
the mean number of prompt tokens prefilled per turn before the context fills and after (when old
turns are dropped). Target: after <= 2x before, i.e. dropping old turns keeps the cached prefix
for many turns instead of prefilling the whole conversation again each turn.

Exits 1 when a target is missed.

    python benchmarks/bench_llm.py [--model PATH] [--rounds 15] [--tokens 64] [--turns 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import llama_cpp

from edge_ai import registry
from edge_ai.chat_format import builtin_family
from edge_ai.gguf_file import read_gguf
from edge_ai.hardware import default_threads
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import DoneEvent, SamplingParams

TARGET_RATIO = 0.97
FILL_TARGET = 2.0
TOPICS = ["the moon", "rivers", "volcanoes", "honey bees", "the ocean", "mountains", "owls", "rain", "deserts",
          "apples", "glaciers", "lightning", "penguins", "forests", "comets", "salt", "wolves", "islands", "coffee",
          "clouds"]


def prompt_messages(round_no: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Round {round_no}. Explain in a few sentences why the sky is blue, "
                                        "mentioning Rayleigh scattering and the wavelengths of sunlight."}]


def run_engine(engine: Engine, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    for event in engine.chat(messages, SamplingParams(temperature=0.0, max_tokens=max_tokens)):
        if isinstance(event, DoneEvent):
            break
        last = time.perf_counter()
        first = first or last
        n += 1
    return first - start, (n - 1) / (last - first) if n > 1 else 0.0, n


def run_raw(llm: llama_cpp.Llama, tokens: list[int], max_tokens: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    for token in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or n >= max_tokens:
            break
        llm.detokenize([token])
        last = time.perf_counter()
        first = first or last
        n += 1
    return first - start, (n - 1) / (last - first) if n > 1 else 0.0, n


def long_conversation(path: Path, turns: int, context: int, max_tokens: int) -> dict[str, object]:
    """Mean prefill tokens per turn before and after the conversation outgrows the context."""
    engine = Engine(path, options=EngineOptions(context=context))
    messages: list[dict[str, str]] = []
    before: list[int] = []
    after: list[int] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Tell me one fact about {TOPICS[turn % len(TOPICS)]}."})
        done = [e for e in engine.chat(messages, SamplingParams(temperature=0.0, max_tokens=max_tokens))
                if isinstance(e, DoneEvent)][0]
        messages.append({"role": "assistant", "content": done.text})
        (after if done.metrics.dropped_messages else before).append(done.metrics.prefill_tokens)
    engine.close()
    if not after:
        raise SystemExit(f"the conversation never outgrew {context} tokens; raise --turns or lower --fill-context")
    ratio = statistics.mean(after) / statistics.mean(before)
    return {"turns": turns, "context": context, "format": engine.chat_format.label,
            "turns_before_full": len(before), "mean_prefill_before": round(statistics.mean(before), 1),
            "mean_prefill_after": round(statistics.mean(after), 1), "after_over_before": round(ratio, 2),
            "target": FILL_TARGET, "meets_target": ratio <= FILL_TARGET}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--fill-context", type=int, default=1024)
    args = parser.parse_args()

    path = Path(registry.resolve(args.model))
    turns_format = "builtin" if builtin_family(read_gguf(path)) else "auto"  # runs to --tokens, like raw
    options = EngineOptions(context=args.context, chat_format=turns_format)
    raw = llama_cpp.Llama(str(path), n_ctx=args.context, n_batch=options.batch, n_ubatch=options.batch,
                          n_threads=default_threads(), n_threads_batch=default_threads(),
                          swa_full=options.swa_full, verbose=False)
    engine = Engine(path, options=options)
    results: dict[str, list[tuple[float, float, int]]] = {"engine": [], "raw": []}
    run_engine(engine, prompt_messages(-1), 8)  # warm up both (page in weights)
    run_raw(raw, engine.encode(prompt_messages(-2)), 8)
    for round_no in range(args.rounds):
        messages = prompt_messages(round_no)
        tokens = engine.encode(messages)
        if round_no % 2:
            results["raw"].append(run_raw(raw, tokens, args.tokens))
            results["engine"].append(run_engine(engine, messages, args.tokens))
        else:
            results["engine"].append(run_engine(engine, messages, args.tokens))
            results["raw"].append(run_raw(raw, tokens, args.tokens))

    def summary(side: str) -> dict[str, float]:
        ttfts = [r[0] * 1000 for r in results[side]]
        rates = [r[1] for r in results[side]]
        return {"ttft_ms_best": round(min(ttfts), 2), "ttft_ms_median": round(statistics.median(ttfts), 2),
                "decode_tok_s_best": round(max(rates), 2), "decode_tok_s_median": round(statistics.median(rates), 2)}

    ours, theirs = summary("engine"), summary("raw")
    ttft_ratio = theirs["ttft_ms_best"] / ours["ttft_ms_best"]
    decode_ratio = ours["decode_tok_s_best"] / theirs["decode_tok_s_best"]
    engine.close()
    fill = long_conversation(path, args.turns, args.fill_context, args.tokens)
    meets_target = ttft_ratio >= TARGET_RATIO and decode_ratio >= TARGET_RATIO and bool(fill["meets_target"])
    print(json.dumps({
        "model": args.model, "rounds": args.rounds, "max_tokens": args.tokens, "threads": engine.threads,
        "engine": ours, "raw_llama_cpp": theirs,
        "ttft_ratio_raw_over_engine": round(ttft_ratio, 3),
        "decode_ratio_engine_over_raw": round(decode_ratio, 3),
        "target_ratio": TARGET_RATIO,
        "long_conversation": fill,
        "meets_target": meets_target,
    }, indent=2))
    raise SystemExit(0 if meets_target else 1)


if __name__ == "__main__":
    main()

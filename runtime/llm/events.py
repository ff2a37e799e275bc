"""What the engine takes (sampling options) and gives back (a stream of typed events)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens; defaults match `edge_ai.config.SamplingSettings`."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int = -1
    max_tokens: int = 1024
    stop: tuple[str, ...] = ()
    # OpenAI's penalties: subtracted from the logit of every token already generated, once
    # (presence) and once per occurrence (frequency), over the last 64 tokens as llama.cpp does.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # (token id, bias) pairs added to those tokens' logits before sampling; -100 bans, +100 forces.
    logit_bias: tuple[tuple[int, float], ...] = ()
    # None: no log-probabilities; n >= 0: report each token's and its n likeliest alternatives'.
    logprobs: int | None = None
    # A GBNF grammar (llama.cpp's format) every reply must match, e.g. JSON of a schema.
    grammar: str | None = None

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> SamplingParams:
        """Build from a config section (or any object with some of the same attributes) plus overrides."""
        values = {name: getattr(settings, name) for name in cls.__dataclass_fields__ if hasattr(settings, name)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["stop"] = tuple(values.get("stop", ()))
        return cls(**values)


@dataclass(frozen=True)
class Metrics:
    """Timings and counts of one reply. Rates are 0 when there was nothing to measure."""

    prompt_tokens: int
    cached_tokens: int
    prefill_tokens: int
    generated_tokens: int
    ttft_s: float
    prefill_tok_s: float
    decode_tok_s: float
    itl_p50_ms: float
    itl_p95_ms: float
    total_s: float
    context_used: int
    context_size: int
    dropped_messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability under the model (before any penalty, bias or
    grammar) and, when asked for, its likeliest alternatives as (bytes, log-probability)."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """New reply text (one token's worth, held back while it might start a stop string).

    With `SamplingParams.logprobs` set, `logprobs` holds the tokens whose text this event
    completes, so an event may carry tokens and no text. Over a reply their bytes joined are the
    reply's text, except that the last token may run on into the stop string that cut the reply.
    """

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    at: float = field(default_factory=time.monotonic, compare=False)
    """When it was produced (time.monotonic), so a pipeline's latency can be read from events alone."""


@dataclass(frozen=True)
class DoneEvent:
    """The reply ended: `text` is everything that was streamed."""

    reason: FinishReason
    text: str
    metrics: Metrics = field(repr=False)
    at: float = field(default_factory=time.monotonic, compare=False)
    """When the reply ended (time.monotonic); `metrics` has the per-stage timings."""


Event = TokenEvent | DoneEvent

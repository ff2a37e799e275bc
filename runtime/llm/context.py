"""Context-overflow policy: fit a conversation into the context window.

The oldest turns are dropped first; the system prompt and the newest user message always stay.
A newest message that cannot fit even alone is refused with a clear error rather than truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_ai.errors import EdgeAIError

Message = dict[str, str]


@dataclass(frozen=True)
class FittedPrompt:
    messages: list[Message]
    tokens: list[int]
    dropped: int


def fit_messages(messages: Sequence[Message], encode: Callable[[Sequence[Message]], list[int]],
                 budget: int) -> FittedPrompt:
    """The newest messages whose prompt (`encode` = template + tokenizer) fits in `budget` tokens.

    Drops whole messages from the oldest non-system one onward, never leaving an assistant
    message first after the system prompt (models expect a user turn there). Keeping fewer
    messages never makes the prompt longer, so the cut is found by bisection: O(log n) encodes,
    not one per dropped message (a 300-message chat would otherwise take seconds per turn).
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = list(messages[len(system):])
    if not rest:
        raise EdgeAIError("there is no message to answer; send a user message")
    starts = [0] + [i for i in range(1, len(rest)) if rest[i]["role"] == "user" or i == len(rest) - 1]
    cache: dict[int, list[int]] = {}

    def tokens_from(start: int) -> list[int]:
        if start not in cache:
            cache[start] = encode(system + rest[start:])
        return cache[start]

    lo, hi = 0, len(starts) - 1
    if len(tokens_from(starts[hi])) > budget:
        raise EdgeAIError(
            f"the message is too long: with the system prompt it needs {len(tokens_from(starts[hi]))} tokens "
            f"but the context leaves room for {budget}; shorten it or raise model.context"
        )
    while lo < hi:  # the first start whose prompt fits
        mid = (lo + hi) // 2
        if len(tokens_from(starts[mid])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    start = starts[lo]
    return FittedPrompt(system + rest[start:], tokens_from(start), start)

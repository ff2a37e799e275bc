"""Context-overflow policy: fit a conversation into the context window.

The oldest turns are dropped first; the system prompt and the newest user message always stay.
A newest message that cannot fit even alone is refused with a clear error rather than truncated.

Turns are dropped in blocks, not one message at a time. Dropping the fewest messages that make
the prompt fit would drop a different set every turn once the context is full, so the prompt's
start would change every turn and the whole conversation would be prefilled again each time
(~6 s at 4k context on 2 cores). Block boundaries are fixed points of the conversation (every
`block` tokens of message text from its start), so once a block is dropped the same messages
stay dropped, the prompt keeps its prefix, and the KV cache serves it until the next block goes,
as llama.cpp's context shift does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge_ai.errors import EdgeAIError

# role and content (str); a user message may also carry "image": an RGB array (height, width, 3) for
# an engine loaded with a vision projector (runtime.llamacpp.mtmd)
Message = dict[str, Any]


@dataclass(frozen=True)
class FittedPrompt:
    messages: list[Message]
    tokens: list[int]
    dropped: int


def fit_messages(messages: Sequence[Message], encode: Callable[[Sequence[Message]], list[int]],
                 budget: int, *, block: int = 0, measure: Callable[[Message], int] | None = None) -> FittedPrompt:
    """The newest messages whose prompt (`encode` = template + tokenizer) fits in `budget` tokens.

    Drops whole messages from the oldest non-system one onward, never leaving an assistant
    message first after the system prompt (models expect a user turn there). With `block` > 0
    and `measure` (a message's length in tokens), messages go in blocks of about `block` tokens
    at fixed boundaries (see the module docstring); otherwise as few as needed. Keeping fewer
    messages never makes the prompt longer, so the cut is found by bisection: O(log n) encodes,
    not one per dropped message (a 300-message chat would otherwise take seconds per turn).
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = list(messages[len(system):])
    if not rest:
        raise EdgeAIError("there is no message to answer; send a user message")
    cache: dict[int, list[int]] = {}

    def tokens_from(start: int) -> list[int]:
        if start not in cache:
            cache[start] = encode(system + rest[start:])
        return cache[start]

    if len(tokens_from(0)) <= budget:  # the usual turn: one encode, nothing measured
        return FittedPrompt(system + rest, tokens_from(0), 0)
    starts = [0] + [i for i in range(1, len(rest)) if rest[i]["role"] == "user" or i == len(rest) - 1]
    if block > 0 and measure is not None:
        starts = _block_starts(rest, starts, block, measure)

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


def _block_starts(rest: list[Message], starts: list[int], block: int, measure: Callable[[Message], int]) -> list[int]:
    """The cut points allowed with block dropping: the conversation's start, then the first
    allowed start at or past every `block` tokens of message text, and always the last one
    (the newest user message alone). They depend only on the messages before them, so they stay
    put as the conversation grows."""
    offsets = list(itertools.accumulate((measure(m) for m in rest), initial=0))
    chosen = [0]
    for start in starts[1:-1]:
        if offsets[start] >= (offsets[chosen[-1]] // block + 1) * block:
            chosen.append(start)
    if starts[-1] != chosen[-1]:
        chosen.append(starts[-1])
    return chosen

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
    message first after the system prompt (models expect a user turn there).
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = list(messages[len(system):])
    if not rest:
        raise EdgeAIError("there is no message to answer; send a user message")
    dropped = 0
    while True:
        candidate = system + rest
        tokens = encode(candidate)
        used = len(tokens)
        if used <= budget:
            return FittedPrompt(candidate, tokens, dropped)
        if len(rest) == 1:
            raise EdgeAIError(
                f"the message is too long: with the system prompt it needs {used} tokens but the "
                f"context leaves room for {budget}; shorten it or raise model.context"
            )
        rest.pop(0)
        dropped += 1
        while len(rest) > 1 and rest[0]["role"] != "user":
            rest.pop(0)
            dropped += 1

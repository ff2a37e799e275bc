"""Context-overflow policy: fit a conversation into the context window.

The oldest turns are dropped first; the system prompt and the newest user message always stay.
A newest message that cannot fit even alone is refused with a clear error rather than truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edge_ai.errors import EdgeAIError

Message = dict[str, str]


def fit_messages(messages: Sequence[Message], count_tokens: Callable[[Sequence[Message]], int],
                 budget: int) -> tuple[list[Message], int]:
    """Return (messages that fit in `budget` prompt tokens, how many were dropped).

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
        used = count_tokens(candidate)
        if used <= budget:
            return candidate, dropped
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

"""What the TUI, the server and the voice pipeline need of an engine, as a `Protocol`.

`runtime.llm.engine.Engine` (llama.cpp) is the implementation; tests drive the TUI and the
server with a small scripted engine (`tests/fake_engine.py`) that implements the same protocol,
so their logic is tested in milliseconds while the real-model tests stay.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from runtime.llm.context import Message
from runtime.llm.events import Event, SamplingParams


@runtime_checkable
class ChatEngine(Protocol):
    """A loaded model. `chat`/`complete` run in one worker thread at a time; `cancel` from anywhere."""

    name: str
    n_ctx: int
    """The context window in tokens."""

    @property
    def sees_images(self) -> bool:
        """Whether a message may carry an "image" (a vision projector is loaded)."""
        ...

    @property
    def context_used(self) -> int:
        """Tokens the context holds now."""
        ...

    def chat(self, messages: Sequence[Message], sampling: SamplingParams = ..., *,
             stop: threading.Event | None = None) -> Iterator[Event]:
        """Stream a reply to role/content messages: TokenEvents, then one DoneEvent with the metrics.
        `stop` is the caller's cancel token for this reply. A message's "image" needs `sees_images`."""
        ...

    def complete(self, prompt: str, sampling: SamplingParams = ..., *,
                 stop: threading.Event | None = None) -> Iterator[Event]:
        """Stream a plain continuation of `prompt`, as `chat` does."""
        ...

    def cancel(self) -> None:
        """Stop the reply in progress within one token."""
        ...

    def close(self) -> None:
        """Free the model."""
        ...

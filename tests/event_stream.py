"""Test helper: drain an engine event stream, checking its shape on the way."""

from __future__ import annotations

from collections.abc import Iterable

from runtime.llm.events import DoneEvent, Event, TokenEvent


def run(events: Iterable[Event]) -> tuple[list[str], DoneEvent]:
    """Return (token texts, the final DoneEvent); fails if anything follows the DoneEvent."""
    texts: list[str] = []
    done: DoneEvent | None = None
    for event in events:
        if isinstance(event, TokenEvent):
            assert done is None, "no token may follow the DoneEvent"
            texts.append(event.text)
        else:
            done = event
    assert isinstance(done, DoneEvent)
    return texts, done

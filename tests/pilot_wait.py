"""Waiting in Pilot tests for something the app does on its own threads (a model load, a reply, voice)."""

from __future__ import annotations

from collections.abc import Callable


async def wait_for(pilot, condition: Callable[[], object], what: str, seconds: float = 120) -> None:
    """Pause the app's clock in small steps until `condition()` holds; fail naming `what` after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")

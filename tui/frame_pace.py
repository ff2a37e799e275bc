"""How often a streaming reply is drawn: each frame the UI draws takes CPU from the model and the voice.

    pace = FramePace()                 # when a reply starts
    if pace.due(): draw(pending)       # at each piece of text
"""

from __future__ import annotations

import time

FRAME_RATE = 12  # at most, reply updates per second on screen while a reply streams
SLOWEST_FRAME_RATE = 1  # at least, whatever drawing costs
UI_CPU_SHARE = 0.02  # of one core, for drawing a streaming reply: the rest is llama.cpp's


class FramePace:
    """When to draw the next frame of a streaming reply: the first token at once, then at most
    FRAME_RATE a second, and only while this (the UI) thread has used less than UI_CPU_SHARE of
    a core since the reply began, but at least SLOWEST_FRAME_RATE a second.

    On a 2-core laptop llama.cpp's two threads wait for each other at every step of a token, so
    any CPU the UI takes stalls both: measured, drawing 15 frames a second (13% of a core) cost
    15% of the decode speed. The budget keeps the cost small on any machine and any reply
    (long Markdown costs more to lay out), instead of a frame rate tuned for one.
    """

    def __init__(self) -> None:
        self._started, self._cpu_at_start = time.monotonic(), time.thread_time()
        self._shown_at: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._shown_at is not None:
            since = now - self._shown_at
            within_budget = time.thread_time() - self._cpu_at_start <= UI_CPU_SHARE * (now - self._started)
            if since < 1 / SLOWEST_FRAME_RATE and not (since >= 1 / FRAME_RATE and within_budget):
                return False
        self._shown_at = now
        return True

"""Frames too quiet to be speech in a quiet room, found without the neural VAD.

    gate = QuietGate()
    if gate.quiet(frame):                   # every frame, scored or not: it tracks the floor
        gate.skip(frame)
        probability = 0.0
    else:
        for skipped in gate.take_skipped():  # the noise just before, which Silero would have heard
            vad(skipped)
        probability = vad(frame)

Listening while nobody speaks is the assistant's most common state, and Silero is most of its cost
(~0.3-0.6 ms a frame on a dozing core, 31 frames a second). In a quiet room most frames are the
microphone's noise floor: a frame within MARGIN_DB of the floor (the quietest frame of the last
FLOOR_SECONDS) is that noise, not a voice, so Silero need not score it (RealtimeSTT puts WebRTC's
energy VAD in front of Silero for the same reason). The gate only ever skips in a quiet room: when the
floor is above QUIET_ROOM_DB (a fan, music, a TV) a voice may be only a few dB over it, and every frame
is scored as before. Silero is a recurrent model: after skipped frames it is as if the silence had
been shorter, and a quiet talker's first words were then found up to 0.35 s late. So before the
next scored frame it hears the last WARM_UP_FRAMES skipped ones (never more frames in all than
scoring every one): speech starts within a frame of where Silero alone starts it (espeak questions
over silence, -70 / -60 / -52 dBFS noise, talkers down to -30 dB).
"""

from __future__ import annotations

import collections

import numpy as np

from runtime.audio.vad import FRAME_SECONDS

FLOOR_SECONDS = 3.0  # the floor is the quietest frame this recent: a dropout to zeros is forgotten this fast
MARGIN_DB = 6.0  # above the floor by this, a frame may be a voice (at 10 dB a faint talker started 0.16 s late)
QUIET_ROOM_DB = -50.0  # frame RMS (dBFS) of the loudest floor the gate works in
SILENT_DB = -120.0  # the level given to a frame of zeros
WARM_UP_FRAMES = 8  # skipped frames Silero hears before the next scored one (0.26 s)


class QuietGate:
    """Tracks the microphone's noise floor frame by frame; `quiet(frame)` says a frame is only that noise."""

    def __init__(self) -> None:
        self._levels: collections.deque[float] = collections.deque(maxlen=round(FLOOR_SECONDS / FRAME_SECONDS))
        self.level = SILENT_DB  # dBFS (RMS) of the last frame
        self._skipped: collections.deque[np.ndarray] = collections.deque(maxlen=WARM_UP_FRAMES)

    def quiet(self, frame: np.ndarray) -> bool:
        """Whether `frame` (float32, any length) is within MARGIN_DB of a quiet room's noise floor.
        Call it for every frame, scored or not: the floor is tracked from all of them."""
        power = float(np.mean(np.square(frame, dtype=np.float64))) if frame.size else 0.0
        self.level = max(10.0 * float(np.log10(power)), SILENT_DB) if power > 0 else SILENT_DB
        self._levels.append(self.level)
        floor = min(self._levels)
        return floor <= QUIET_ROOM_DB and self.level < floor + MARGIN_DB

    def skip(self, frame: np.ndarray) -> None:
        """`frame` is not scored; the latest such frames are kept for the model's warm-up."""
        self._skipped.append(frame)

    def take_skipped(self) -> list[np.ndarray]:
        """The frames skipped since the last scored one (up to WARM_UP_FRAMES), oldest first; forgets them."""
        frames = list(self._skipped)
        self._skipped.clear()
        return frames

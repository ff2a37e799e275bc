"""Long silences cut out of an audio stream before Whisper reads it, and the way back to stream time.

    cutter = SilenceCutter(blocks)            # 16 kHz float32 blocks of any size
    for block in cutter:                      # the speech, with up to PAD seconds of its silence either side
        ...
    cutter.to_stream(seconds)                 # a time in what was yielded -> the same instant in the stream

Whisper reads 30-s windows and was trained on windows of speech; a window that is mostly silence is
where it goes wrong: it dates a sentence after 19 s of silence from the window's start, writes
"Thank you." for a third of a second of hiss, and (a file with one sentence after 27 s of silence)
leaves a sentence out altogether. faster-whisper's `vad_filter` removes such silences with Silero
VAD, on a whole array; this does the same on a stream, holding at most MIN_GAP seconds, so it serves
every backend and hours of audio. A gap without speech of MIN_GAP seconds or more is cut down to
PAD seconds after the speech before it and PAD before the speech after it (faster-whisper's defaults);
a shorter pause stays whole (Whisper punctuates from it). Silence before the first words and after
the last is cut the same way. A frame is speech from a probability of `threshold` on, and stays so
down to `release` (faster-whisper's 0.5 and 0.35).
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterable, Iterator

import numpy as np

from runtime.audio.vad import FRAME, SAMPLE_RATE, SileroVad, VadOptions

MIN_GAP = 2.0  # seconds without speech from which a gap is cut
PAD = 0.4  # seconds of a cut gap kept next to the speech on either side


class SilenceCutter:
    """Iterate for the speech; `to_stream` maps times in it back to the stream."""

    def __init__(self, blocks: Iterable[np.ndarray], vad: VadOptions = VadOptions()) -> None:
        self._blocks = blocks
        self._options = vad
        self._vad = SileroVad()
        self._pad_frames = round(PAD * SAMPLE_RATE / FRAME)
        self._gap_frames = round(MIN_GAP * SAMPLE_RATE / FRAME)
        # where each kept piece starts, in samples yielded and in samples of the stream (both increasing)
        self._yielded_at: list[int] = []
        self._stream_at: list[int] = []
        self._yielded = 0
        self._next_stream = -1  # the stream sample right after the last one yielded

    def __iter__(self) -> Iterator[np.ndarray]:
        rest = np.zeros(0, dtype=np.float32)
        position = 0  # stream samples framed so far
        speaking = False
        pause: list[tuple[int, np.ndarray]] = []  # the silence since the last speech, while shorter than a gap
        gap: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=self._pad_frames)  # a gap's latest
        in_gap = True  # the stream starts in a gap: the silence before the first words is cut
        for block in self._blocks:
            rest = np.concatenate([rest, block])
            count = len(rest) // FRAME
            frames, rest = list(rest[:count * FRAME].reshape(count, FRAME)), rest[count * FRAME:]
            out: list[tuple[int, np.ndarray]] = []
            for frame, probability in zip(frames, self._vad.score(frames)):  # a block's frames in one call
                speaking = probability >= (self._options.release if speaking else self._options.threshold)
                if speaking:
                    out += pause if not in_gap else list(gap)
                    out.append((position, frame))
                    pause, in_gap = [], False
                    gap.clear()
                elif in_gap:
                    gap.append((position, frame))
                else:
                    pause.append((position, frame))
                    if len(pause) >= self._gap_frames:  # a gap: keep PAD after the speech, then only its latest PAD
                        out += pause[:self._pad_frames]
                        gap.extend(pause[self._pad_frames:])
                        pause, in_gap = [], True
                position += FRAME
            if out:
                yield self._emit(out)
        if not in_gap and (pause or len(rest)):  # the end of a short pause, and the samples short of a frame
            yield self._emit(pause + [(position, rest)])

    def _emit(self, frames: list[tuple[int, np.ndarray]]) -> np.ndarray:
        """One block of the kept frames, noting where a cut makes them jump ahead in the stream."""
        for start, frame in frames:
            if start != self._next_stream:
                self._yielded_at.append(self._yielded)
                self._stream_at.append(start)
            self._yielded += len(frame)
            self._next_stream = start + len(frame)
        return np.concatenate([frame for _, frame in frames])

    def to_stream(self, seconds: float, *, end: bool = False) -> float:
        """The stream time of `seconds` into what was yielded. At a cut, a start is dated after the gap, an
        `end` before it (a segment ending where a kept piece ends ended before the silence)."""
        if not self._yielded_at:  # nothing kept yet
            return seconds
        sample = seconds * SAMPLE_RATE
        find = bisect.bisect_left if end else bisect.bisect_right
        piece = max(0, find(self._yielded_at, sample) - 1)
        return (self._stream_at[piece] + sample - self._yielded_at[piece]) / SAMPLE_RATE

    def last_cut(self, after: float, until: float) -> float | None:
        """The latest cut (seconds yielded) later than `after` and at most `until`: a window of speech that
        ends there ends in silence, between two sentences rather than inside one."""
        index = bisect.bisect_right(self._yielded_at, until * SAMPLE_RATE) - 1
        if index < 0 or self._yielded_at[index] <= after * SAMPLE_RATE:
            return None
        return self._yielded_at[index] / SAMPLE_RATE

    def forget_before(self, seconds: float) -> None:
        """Times before `seconds` (yielded) will not be asked again: drop the pieces wholly before it."""
        drop = bisect.bisect_right(self._yielded_at, seconds * SAMPLE_RATE) - 1
        if drop > 0:
            del self._yielded_at[:drop], self._stream_at[:drop]

"""Voice activity: Silero VAD's ONNX model on onnxruntime, and a four-state segmenter with hysteresis.

    vad = SileroVad()                                   # the file from the silero-vad wheel (never its torch package)
    p = vad(frame)                                      # 512 samples at 16 kHz (32 ms) -> speech probability
    ps = vad.score(frames)                              # consecutive frames in one call: the same probabilities
    segmenter = VadSegmenter(VadOptions())
    for event in segmenter.push(frame, p): ...          # SpeechStarted (with pre-roll), SpeechStopped

The segmenter follows pipecat's VAD analyzer: QUIET -> STARTING -> SPEAKING -> STOPPING, parameters in
seconds. Speech starts when the probability stays >= `threshold` for `min_speech`; it stops when it
stays < `release` for `min_silence` (two thresholds: a probability hovering near one value does not
flap). When speech starts, the `pre_roll` seconds before it are handed over too, so the first
syllable, which Silero scores low, reaches the transcript. A word too short to start speech on its own
that speech follows within JOIN_GAP ("Stop, please.": espeak's "Stop" is 7 speech frames, one short
of `min_speech`, then a comma pause) starts it: the speech and its pre-roll begin at that word, which
the pre-roll alone, 0.3 s before "please", lost (Whisper then heard "Clean.").
"""

from __future__ import annotations

import collections
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from edge_ai.errors import EdgeAIError

SAMPLE_RATE = 16_000
FRAME = 512  # samples per Silero frame at 16 kHz (32 ms): the only size the model takes
FRAME_SECONDS = FRAME / SAMPLE_RATE
CONTEXT = 64  # samples of the previous frame the model sees before each new one
JOIN_GAP = 0.6  # seconds between a run of speech too short to start and the start it then belongs to
SEQUENCE_MODEL = "silero_vad_16k_sequence.onnx"


def silero_model_file() -> Path:
    """Silero VAD's 16 kHz sequence model inside the silero-vad wheel, found without importing the package
    (it imports torch). The same network as its silero_vad.onnx (the same probabilities: test_vad checks),
    taking any number of consecutive frames in one call: four frames cost ~1.4 ms of CPU on a core that
    dozed since the last call, against ~2.8 ms for four single-frame calls (and ~0.5 / 1.4 ms warm)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeAIError("the Silero VAD model is missing: pip install --no-deps silero-vad "
                          "(scripts/setup.sh does it)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / SEQUENCE_MODEL
        if path.is_file():
            return path
    raise EdgeAIError(f"the silero-vad package has no data/{SEQUENCE_MODEL}; reinstall it: pip install --no-deps "
                      "--force-reinstall silero-vad==6.2.3")


class SileroVad:
    """Speech probability per 32 ms frame; keeps the model's recurrent state between calls, so frames go
    in in the order they were heard."""

    def __init__(self, path: Path | None = None) -> None:
        from runtime.onnx_session import open_session

        self._session = open_session(path or silero_model_file(), threads=1)
        self.reset()

    def reset(self) -> None:
        """Forget the audio so far (a new stream)."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        return float(self.score([frame])[0])

    def score(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """The speech probability of each of `frames`, consecutive and following the frames scored before."""
        if not frames:
            return np.zeros(0, dtype=np.float32)
        for frame in frames:
            if frame.shape != (FRAME,):
                raise ValueError(f"Silero VAD takes {FRAME} samples at 16 kHz, got {frame.shape}")
        audio = np.concatenate([self._context, *frames]).astype(np.float32, copy=False)
        # each row: a frame with the CONTEXT samples heard before it
        rows = np.lib.stride_tricks.sliding_window_view(audio, CONTEXT + FRAME)[::FRAME]
        probabilities, self._h, self._c = self._session.run(None, {"input": np.ascontiguousarray(rows),
                                                                   "h": self._h, "c": self._c})
        self._context = audio[-CONTEXT:].copy()
        return probabilities


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5  # probability at or above which a frame is speech
    release: float = 0.35  # probability below which a frame is silence (between the two: no change)
    min_speech: float = 0.25  # seconds of speech frames before speech counts as started
    min_silence: float = 0.1  # seconds of silence frames before speech counts as paused
    pre_roll: float = 0.3  # seconds of audio before the start handed over with it

    def __post_init__(self) -> None:
        if not 0 < self.release <= self.threshold < 1:
            raise EdgeAIError(f"VAD thresholds must satisfy 0 < release ({self.release}) <= threshold "
                              f"({self.threshold}) < 1")


class VadState(Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True)
class SpeechStarted:
    audio: np.ndarray  # the pre-roll and the frames that confirmed speech, oldest first
    start: float  # stream seconds where the first speech frame began
    # samples at the front of `audio` that were frames of the speech before it (its pre-roll reaches back over
    # a pause shorter than itself): a turn that goes on after that pause already holds them
    repeated: int = 0


@dataclass(frozen=True)
class SpeechStopped:
    end: float  # stream seconds where the last speech frame ended (silence since then)


class VadSegmenter:
    """Turns per-frame probabilities into speech start/stop events, in stream seconds (frames counted)."""

    def __init__(self, options: VadOptions = VadOptions()) -> None:
        self.options = options
        self.start_frames = max(1, round(options.min_speech / FRAME_SECONDS))
        self._stop_frames = max(1, round(options.min_silence / FRAME_SECONDS))
        self._pre_roll_frames = round(options.pre_roll / FRAME_SECONDS)
        self._join_frames = round(JOIN_GAP / FRAME_SECONDS)
        # room for the pre-roll, a short run, the gap after it and the start's own frames
        self._history: collections.deque[np.ndarray] = collections.deque(
            maxlen=self._pre_roll_frames + 2 * self.start_frames + self._join_frames)
        self.state = VadState.QUIET
        self._run = 0  # frames in a row that argue for leaving the current state
        self._frames = 0
        self._short: tuple[int, int] | None = None  # [first, end) frames of the last run too short to start
        self._last_speech_end = 0.0
        self._stopped_at = 0  # the frame that ended the last speech (the frames before it were in it)
        self.spoke = False  # speech has started at least once

    @property
    def in_speech(self) -> bool:
        """Speech has started and not yet stopped (a short pause inside it included)."""
        return self.state in (VadState.SPEAKING, VadState.STOPPING)

    @property
    def starting(self) -> int:
        """Speech frames so far of a start not yet confirmed (0 unless starting)."""
        return self._run if self.state is VadState.STARTING else 0

    @property
    def now(self) -> float:
        """Stream seconds at the end of the last frame pushed."""
        return self._frames * FRAME_SECONDS

    @property
    def silence(self) -> float:
        """Seconds since the last speech frame ended, while speech is pausing or over."""
        return self.now - self._last_speech_end if self.state in (VadState.STOPPING, VadState.QUIET) else 0.0

    def _joined_start(self, first: int) -> int:
        """Where a run of speech frames that begins at frame `first` really begins: at an earlier run too short
        to start on its own, if that ended within JOIN_GAP of it."""
        if self._short is not None and first - self._short[1] <= self._join_frames:
            return self._short[0]
        return first

    def push(self, frame: np.ndarray, probability: float) -> SpeechStarted | SpeechStopped | None:
        self._frames += 1
        self._history.append(frame)
        opts = self.options
        speech, silent = probability >= opts.threshold, probability < opts.release
        frame_index = self._frames - 1
        if self.state is VadState.QUIET and speech:
            self.state, self._run = VadState.STARTING, 0
        if self.state is VadState.STARTING:  # its `_run` frames of speech end just before this frame
            if silent:
                self.state = VadState.QUIET
                self._short = (self._joined_start(frame_index - self._run), frame_index)
                self._run = 0
                return None
            self._run += 1
            if self._run >= self.start_frames:
                first, self._short = self._joined_start(frame_index + 1 - self._run), None
                self.state, self._run = VadState.SPEAKING, 0
                self._last_speech_end = self.now
                self.spoke = True
                frames = min(len(self._history), frame_index - first + 1 + self._pre_roll_frames)
                repeated = max(0, self._stopped_at - (frame_index + 1 - frames))
                return SpeechStarted(audio=np.concatenate(list(self._history)[-frames:]), start=first * FRAME_SECONDS,
                                     repeated=repeated * FRAME)
            return None
        if self.state is VadState.SPEAKING:
            if not silent:
                self._last_speech_end = self.now
                return None
            self.state, self._run = VadState.STOPPING, 0
        if self.state is VadState.STOPPING:
            if not silent:
                self.state, self._run = VadState.SPEAKING, 0
                self._last_speech_end = self.now
                return None
            self._run += 1
            if self._run >= self._stop_frames:
                self.state, self._run = VadState.QUIET, 0
                self._stopped_at = frame_index
                return SpeechStopped(end=self._last_speech_end)
        return None

"""Silero is not run on a quiet room's noise floor while nobody speaks and nothing plays (`QuietGate` in
`Hearing`): speech is heard as when every frame is scored, most noise frames are not scored, and nothing
is skipped where a voice could hide (a loud room, the assistant speaking)."""

from __future__ import annotations

import numpy as np
import pytest

from convert.onnx.speech import speak, wer_set
from runtime.audio.hearing import Hearing
from runtime.audio.quiet_gate import FLOOR_SECONDS, QuietGate
from runtime.audio.vad import FRAME, FRAME_SECONDS, SileroVad, SpeechStarted, SpeechStopped, VadSegmenter

RATE = 16_000
BLOCK = 320


class CountingVad:
    """The real Silero model, counting the frames it scores."""

    def __init__(self) -> None:
        self.model = SileroVad()
        self.scored = 0

    def __call__(self, frame: np.ndarray) -> float:
        self.scored += 1
        return self.model(frame)

    def score(self, frames: list[np.ndarray]) -> np.ndarray:
        self.scored += len(frames)
        return self.model.score(frames)


def noise(db: float | None, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at `db` dBFS RMS (None: digital silence)."""
    size = round(seconds * RATE)
    if db is None:
        return np.zeros(size, dtype=np.float32)
    return rng.normal(0.0, 10 ** (db / 20), size).astype(np.float32)


def room_with_two_questions(db: float | None, gain: float) -> tuple[np.ndarray, int]:
    """Noise, a question, noise, another, noise; and the sample where the first question starts."""
    rng = np.random.default_rng(7)
    (first, v1), (second, v2) = wer_set()[1], wer_set()[5]
    lead = noise(db, 4.0, rng)
    questions = [gain * speak(first, v1), gain * speak(second, v2)]
    noisy = [q + noise(db, q.size / RATE, rng) for q in questions]  # the room's noise goes on under the voice
    return np.concatenate([lead, noisy[0], noise(db, 3.0, rng), noisy[1], noise(db, 3.0, rng)]), lead.size


def speech_times(events: list[object]) -> list[tuple[str, float]]:
    return [(type(e).__name__, round(e.start if isinstance(e, SpeechStarted) else e.end, 3))
            for e in events if isinstance(e, (SpeechStarted, SpeechStopped))]


def every_frame_scored(audio: np.ndarray) -> list[tuple[str, float]]:
    """The speech events of the same audio with Silero run on every frame."""
    vad, segmenter, events = SileroVad(), VadSegmenter(), []
    for i in range(0, audio.size - FRAME + 1, FRAME):
        event = segmenter.push(audio[i:i + FRAME], vad(audio[i:i + FRAME]))
        if event is not None:
            events.append(event)
    return speech_times(events)


def hear(audio: np.ndarray, *, assistant_speaking: bool = False, stop_at: int | None = None) -> tuple[list[object], int]:
    """Feed `audio` (up to `stop_at`) to headphones-mode hearing in 20 ms blocks; (events, frames scored)."""
    heard: list[object] = []
    hearing = Hearing("headphones", heard.append, assistant_speaking=lambda: assistant_speaking)
    hearing._vad = vad = CountingVad()
    silent = np.zeros(BLOCK, dtype=np.float32)
    end = audio.size if stop_at is None else stop_at
    for i in range(0, end - BLOCK + 1, BLOCK):
        hearing.on_audio(audio[i:i + BLOCK], silent)
    return heard, vad.scored


@pytest.mark.parametrize(("db", "gain"), [(None, 1.0), (-70.0, 1.0), (-60.0, 1.0), (-60.0, 0.1), (-60.0, 0.03),
                                         (-52.0, 0.05)])
def test_a_quiet_rooms_noise_is_not_scored_and_speech_is_heard_the_same(db: float | None, gain: float):
    """Digital silence, a quiet laptop microphone's hiss, and faint talkers (-20 to -30 dB) over it."""
    audio, lead = room_with_two_questions(db, gain)
    heard, _ = hear(audio)
    reference = every_frame_scored(audio)
    assert [kind for kind, _ in reference].count("SpeechStarted") >= 2  # a pause inside a question may split it
    got = speech_times(heard)
    assert [kind for kind, _ in got] == [kind for kind, _ in reference]
    # within a frame: Silero hears the noise it skipped just before (a recurrent model; without that a
    # faint talker started up to 0.35 s late)
    for (_, at), (_, expected) in zip(got, reference):
        assert abs(at - expected) <= 1 * FRAME_SECONDS + 1e-6, (got, reference)
    _, scored_before_speech = hear(audio, stop_at=lead)
    assert scored_before_speech <= 0.1 * lead / FRAME  # the floor is found within the first frames


def test_a_loud_room_is_scored_every_frame():
    """Over a fan or a TV at -44 dBFS a voice may be a few dB above the floor: nothing is skipped."""
    audio = noise(-44.0, 4.0, np.random.default_rng(3))
    _, scored = hear(audio)
    assert scored == audio.size // FRAME


def test_nothing_is_skipped_while_the_assistant_speaks():
    audio = noise(-70.0, 3.0, np.random.default_rng(4))
    _, scored = hear(audio, assistant_speaking=True)
    assert scored == audio.size // FRAME


def test_the_floor_forgets_a_dropout_to_zeros():
    """A second of zeros (a muted microphone, a dropped stream) sets the floor for FLOOR_SECONDS, no longer:
    the room's own noise is then the floor again, and it is quiet."""
    gate, rng = QuietGate(), np.random.default_rng(5)
    for _ in range(round(1.0 / FRAME_SECONDS)):
        assert gate.quiet(np.zeros(FRAME, dtype=np.float32))
    room = [noise(-65.0, FRAME_SECONDS, rng) for _ in range(round((FLOOR_SECONDS + 0.5) / FRAME_SECONDS))]
    verdicts = [gate.quiet(frame) for frame in room]
    assert not any(verdicts[:5])  # 55 dB over zeros: a voice, for all the gate knows
    assert all(verdicts[round(FLOOR_SECONDS / FRAME_SECONDS) + 1:])

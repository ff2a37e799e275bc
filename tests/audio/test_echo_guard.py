"""The echo guard tells the assistant's own voice from the user's on a microphone that hears both.

The echo here is built the way a loop makes it: what was played, delayed, scaled, filtered, and
with the delay jumping halfway (an underrun): the cases where AEC3 alone has not converged."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from convert.onnx.speech import speak
from runtime.audio.echo_guard import EchoGuard
from runtime.audio.hearing import Hearing
from runtime.audio.vad import SpeechStarted, VadOptions

RATE = 16_000
BLOCK = 320

REPLY = ("I am the assistant, and this long sentence is my own voice coming back from the speaker. "
         "It must never sound like the user cutting in, whatever the echo canceller is doing.")


@pytest.fixture(scope="module")
def reply() -> np.ndarray:
    return np.concatenate([np.zeros(RATE // 4, dtype=np.float32), speak(REPLY, "en-gb")])


@pytest.fixture(scope="module")
def user() -> np.ndarray:
    return speak("Wait, wait, I have another question for you.", "en-us+m3")


def echo_of(played: np.ndarray, delay: float = 0.07, jump: float = 0.0) -> np.ndarray:
    """The microphone of a loop: `played` delayed, 6 dB down and low-passed; `jump` more delay from halfway."""
    echo = 0.5 * lfilter([0.6, 0.3, 0.1], [1.0], played).astype(np.float32)
    echo = np.concatenate([np.zeros(round(delay * RATE), dtype=np.float32), echo])[: played.size]
    half = played.size // 2
    return np.concatenate([echo[:half], np.zeros(round(jump * RATE), dtype=np.float32), echo[half:]])[: played.size]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples))))


def scores(mic: np.ndarray, played: np.ndarray, loud: np.ndarray) -> np.ndarray:
    """The guard's score after every 20 ms block of `mic` where `loud` (aligned with it) carries sound."""
    guard, out = EchoGuard(VadOptions()), []
    for i in range(0, mic.size - BLOCK + 1, BLOCK):
        guard.push(mic[i:i + BLOCK], played[i:i + BLOCK])
        if rms(loud[i:i + BLOCK]) > 0.3 * rms(loud):
            out.append(guard.echo_share())
    return np.array(out)


def with_user(mic: np.ndarray, user: np.ndarray, at: float, level_db: float = 0.0) -> tuple[np.ndarray, int]:
    onset = round(at * RATE)
    span = slice(onset, onset + user.size)
    gain = rms(mic[span]) / rms(user) * 10 ** (level_db / 20)
    both = mic.copy()
    both[span] += gain * user[: both[span].size]
    return both, onset


def speech_starts(mic: np.ndarray, played: np.ndarray) -> list[float]:
    starts: list[float] = []
    hearing = Hearing("full", lambda e: starts.append(e.start) if isinstance(e, SpeechStarted) else None,
                      assistant_speaking=lambda: True)
    for i in range(0, mic.size - BLOCK + 1, BLOCK):
        hearing.on_audio(mic[i:i + BLOCK], played[i:i + BLOCK])
    return starts


def test_echo_alone_is_explained_and_the_user_over_it_is_not(reply, user):
    echo = echo_of(reply)
    assert np.percentile(scores(echo, reply, loud=echo), 5) > 0.95
    both, onset = with_user(echo, user, at=2.0)
    users_words = np.zeros_like(both)
    users_words[onset:onset + user.size] = user[: both.size - onset]
    assert np.median(scores(both, reply, loud=users_words)) < 0.5


def test_silence_and_the_user_alone_score_zero(reply, user):
    guard = EchoGuard(VadOptions())
    assert guard.echo_share() == 0.0  # nothing heard yet
    guard.push(user[:RATE], np.zeros(RATE, dtype=np.float32))  # the speaker silent: nothing can be echo
    assert guard.echo_share() == 0.0


@pytest.mark.parametrize("jump", [0.0, 0.1, 0.3])
def test_the_assistants_voice_never_starts_speech_even_when_the_loops_delay_jumps(reply, jump):
    assert speech_starts(echo_of(reply, jump=jump), reply) == []


def test_the_user_cutting_in_over_a_loud_echo_starts_speech_within_a_fraction_of_a_second(reply, user):
    both, onset = with_user(echo_of(reply), user, at=2.5)
    starts = [s for s in speech_starts(both, reply) if s >= onset / RATE - 0.1]
    assert starts and starts[0] - onset / RATE < 0.5


def test_the_guard_judges_the_raw_samples_of_each_cleaned_frame_whatever_the_block_sizes():
    """Blocks of 300-340 samples (a device rate that does not divide evenly), the speaker on and off (AEC3
    in use, holding back part of a 10 ms frame, then bypassed): no sample is lost and each frame the VAD
    scores is judged against the raw microphone over exactly its samples."""
    frames: list[tuple[np.ndarray, np.ndarray]] = []

    class Recording(Hearing):
        def _frame(self, frame, raw_frame, speaking):
            frames.append((frame, raw_frame))

    hearing = Recording("full", lambda event: None)
    rng = np.random.default_rng(0)
    stream = np.arange(120_000, dtype=np.float32) / 1e6  # each sample says where it is
    position = 0
    while position < stream.size - 340:
        size = int(rng.integers(300, 341))
        speaker_on = (position // 30_000) % 2 == 0
        speaker = rng.standard_normal(size).astype(np.float32) * 0.1 if speaker_on else np.zeros(size, np.float32)
        hearing.on_audio(stream[position:position + size], speaker)
        position += size
    starts = [round(float(raw[0]) * 1e6) for _, raw in frames]
    assert all(raw.size == 512 for _, raw in frames)
    assert starts == [i * 512 for i in range(len(frames))]  # consecutive: nothing lost across AEC on/off
    assert len(frames) >= (position - 512) // 512

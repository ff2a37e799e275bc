"""The audio test's verdict from a recording (`runtime.audio.selftest.analyse`), on loops made offline with
real speech, the real echo canceller and the real VAD: full duplex when the echo is cancelled, half
duplex when it cannot be, headphones when no echo comes back."""

from __future__ import annotations

import numpy as np
from room_acoustics import room_response
from scipy.signal import fftconvolve

from convert.onnx.speech import speak
from runtime.audio.selftest import MAX_HOLDS, analyse

RATE = 16_000
DELAY = 0.06  # seconds from the speaker back to the microphone


def loop(played: np.ndarray, heard: np.ndarray, noise_db: float = -70.0) -> tuple[np.ndarray, np.ndarray]:
    """(microphone, speaker) recordings: `heard` reaches the microphone DELAY late, over a faint hiss."""
    lead, lag = np.zeros(int(0.4 * RATE), np.float32), np.zeros(int(DELAY * RATE), np.float32)
    speaker = np.concatenate([lead, played, lag, np.zeros(int(0.6 * RATE), np.float32)])
    microphone = np.concatenate([lead, lag, heard, np.zeros(int(0.6 * RATE), np.float32)])
    hiss = np.random.default_rng(0).normal(0.0, 10 ** (noise_db / 20), microphone.size).astype(np.float32)
    return microphone + hiss, speaker


def reverberant(sound: np.ndarray, rt60: float, drr_db: float) -> np.ndarray:
    return fftconvolve(sound, room_response(rt60, drr_db))[:sound.size].astype(np.float32)


def assistant() -> np.ndarray:
    return speak("This is the assistant checking your speakers and microphone. It speaks for a few seconds, "
                 "listens to its own voice come back, and measures how well the echo is removed.", "en-us")


def test_an_echo_the_canceller_removes_is_full_duplex():
    voice = assistant()
    check = analyse(*loop(voice, 0.5 * voice))
    assert abs(check.delay_ms - DELAY * 1000) < 2
    assert check.vad_false_rate_raw > 0.3 and check.erle_db >= 20
    assert check.false_starts == 0 and check.recommended == "full", check


def test_speech_the_speaker_did_not_play_is_half_duplex():
    """A loop the canceller cannot model (here: what comes back is not what was played) leaves speech
    on the microphone for seconds on end: it would cut every reply off."""
    voice = assistant()
    other = speak("A different voice reads a different text, louder and longer than any echo of the "
                  "assistant could be, so nothing of it can be cancelled against what the speaker played.",
                  "en-gb")[:voice.size]
    check = analyse(*loop(voice, np.pad(other, (0, voice.size - other.size))))
    assert check.false_starts > 0 and check.recommended == "half", check
    assert "too weak" in check.reason


def test_no_echo_is_headphones():
    voice = assistant()
    check = analyse(*loop(voice, 0.0 * voice))
    assert check.recommended == "headphones", check


def test_blips_shorter_than_a_barge_in_keep_full_duplex():
    """AEC3 re-adapting to a drifting loop leaves blips of 2-4 frames; each would hold the reply for a
    moment at most (and the echo guard judges them first), while half duplex could not be interrupted."""
    voice = assistant()
    heard = 0.5 * voice
    blip = speak("Hey", "en-gb")
    blip = blip[np.argmax(np.abs(blip) > 0.05):][:int(0.1 * RATE)]
    for at in (2.0, 4.0, 6.0, 7.5):
        start = int(at * RATE)
        heard[start:start + blip.size] += blip
    check = analyse(*loop(voice, heard))
    assert check.vad_false_rate_aec > 0.02, check  # blips were found...
    assert check.false_starts == 0 and check.recommended == "full", check  # ...and are no reason for half


def test_a_loop_whose_delay_jumps_keeps_full_duplex():
    """The loop's delay jumps by 80 ms, twice (an underrun; PulseAudio's null sink moves it by ~10 ms a few
    times a test), and AEC3 leaks echo after each jump until it finds the delay again: the VAD alone hears
    speech there for longer than a barge-in (the old rule's reason for half duplex), but the echo guard
    knows it for the assistant's voice, so a conversation would not cut itself off: full duplex (half
    duplex could not be interrupted at all)."""
    voice = assistant()
    heard = 0.5 * voice
    for at in (3.0, 5.5):
        start = int(at * RATE)
        heard = np.concatenate([heard[:start], np.zeros(int(0.08 * RATE), np.float32), heard[start:]])[:voice.size]
    check = analyse(*loop(voice, heard))
    assert check.vad_false_rate_aec > 0.05, check  # the leak was heard by the VAD...
    assert check.false_starts == 0 and check.recommended == "full", check  # ...and is no reason for half


def test_sounds_that_pause_the_assistant_again_and_again_are_half_duplex():
    """Seven 50-ms sounds over 9 s of the assistant's voice, each too short to cut it off: a conversation would
    pause its speech at each, a gap every second, where half duplex plays the reply whole."""
    voice = assistant()
    heard = 0.5 * voice
    blip = speak("Hey", "en-gb")
    blip = blip[np.argmax(np.abs(blip) > 0.05):][:int(0.05 * RATE)]
    for at in range(1, 8):
        heard[at * RATE:at * RATE + blip.size] += blip
    check = analyse(*loop(voice, heard))
    assert check.erle_db >= 20 and check.false_starts == 0, check
    assert check.holds > MAX_HOLDS and check.recommended == "half", check
    assert "paused its speech" in check.reason


def test_an_echo_that_rings_on_in_the_room_is_half_duplex():
    """A speaker across a reverberant room: the echo's tail (RT60 0.5 s) carries as much energy as the direct
    sound, and a conversation would take the assistant's voice for the user's: half duplex."""
    voice = assistant()
    check = analyse(*loop(voice, reverberant(0.5 * voice, rt60=0.5, drr_db=0.0)))
    assert check.false_starts > 0 and check.recommended == "half", check


def test_a_room_that_returns_little_reverberation_keeps_full_duplex():
    """A laptop's own speakers in an ordinary room: RT60 0.3-0.5 s, the direct sound 10 dB above the tail; and a
    livelier one (0.4 s, 2 dB), whose tail the echo guard predicts from what was played (4-10 holds before)."""
    voice = assistant()
    for rt60, drr_db in ((0.3, 10.0), (0.5, 10.0), (0.4, 2.0)):
        check = analyse(*loop(voice, reverberant(0.5 * voice, rt60=rt60, drr_db=drr_db)))
        assert check.false_starts == 0 and check.holds <= MAX_HOLDS and check.recommended == "full", (rt60, check)

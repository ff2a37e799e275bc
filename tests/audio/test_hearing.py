"""When hearing may take its audio in larger, rarer blocks (`Hearing.relaxed`): only while nothing needs a
fast reaction, and never at the cost of a sample."""

from __future__ import annotations

import numpy as np

from convert.onnx.speech import speak
from runtime.audio.hearing import ECHO_TAIL, PAUSE_TIMED, Hearing
from runtime.audio.vad import SpeechStarted, SpeechStopped

RATE = 16_000
BLOCK = 320


def test_relaxed_only_while_nobody_speaks_and_nothing_plays_or_echoes_between_turns_while_neither_speaks():
    speaking = [False]
    heard: list[object] = []
    hearing = Hearing("full", heard.append, assistant_speaking=lambda: speaking[0])
    silent = np.zeros(BLOCK, dtype=np.float32)
    for _ in range(int(1.5 * ECHO_TAIL * RATE / BLOCK)):
        hearing.on_audio(silent, silent)
    assert hearing.relaxed() and hearing.between_turns()

    speaking[0] = True
    assert not hearing.relaxed()  # a cut-in must be heard at once
    assert not hearing.between_turns()
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(BLOCK) / RATE).astype(np.float32)
    hearing.on_audio(silent, tone)
    speaking[0] = False
    assert not hearing.relaxed()  # the echo of what just played may still come back
    assert hearing.between_turns()  # (a reopened stream's gap would cut no one)
    for _ in range(int(1.5 * ECHO_TAIL * RATE / BLOCK)):
        hearing.on_audio(silent, silent)
    assert hearing.relaxed()

    speech = speak("Hello there, what time is it?", "en-us")
    for i in range(0, speech.size - BLOCK + 1, BLOCK):
        hearing.on_audio(speech[i:i + BLOCK], silent)
        if any(isinstance(e, SpeechStarted) for e in heard):
            break
    assert any(isinstance(e, SpeechStarted) for e in heard)
    assert not hearing.relaxed()  # the user is speaking: the end of the turn is timed frame by frame
    assert not hearing.between_turns()
    for j in range(i + BLOCK, speech.size - BLOCK + 1, BLOCK):
        hearing.on_audio(speech[j:j + BLOCK], silent)
    for _ in range(int(0.5 * RATE / BLOCK)):
        hearing.on_audio(silent, silent)
    assert any(isinstance(e, SpeechStopped) for e in heard)
    assert not hearing.relaxed()  # the pause that may end the turn is timed frame by frame too
    assert hearing.between_turns()
    for _ in range(int(PAUSE_TIMED * RATE / BLOCK)):
        hearing.on_audio(silent, silent)
    assert hearing.relaxed()


def test_large_blocks_are_heard_like_small_ones():
    """The same audio in 20 ms and in 60 ms blocks gives the same speech events at the same frames."""
    speech = np.concatenate([np.zeros(RATE // 2, dtype=np.float32), speak("Is it going to rain today?", "en-gb"),
                             np.zeros(RATE, dtype=np.float32)])

    def events(block: int) -> list[str]:
        heard: list[str] = []
        hearing = Hearing("headphones", lambda e: heard.append(type(e).__name__))
        for i in range(0, speech.size, block):
            hearing.on_audio(speech[i:i + block], np.zeros(min(block, speech.size - i), dtype=np.float32))
        return [e for e in heard if e != "Level"]

    assert events(BLOCK) == events(3 * BLOCK)

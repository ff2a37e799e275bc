"""SilenceCutter with the real Silero VAD on espeak speech: gaps of 2 s or more are cut to 0.4 s either
side, shorter pauses stay whole, and every kept sample maps back to its place in the stream."""

from __future__ import annotations

import numpy as np
import pytest

from convert.onnx.speech import speak
from runtime.audio.silence_cut import PAD, SilenceCutter
from runtime.audio.vad import FRAME

RATE = 16_000


def hiss(seconds: float, rng: np.random.Generator, db: float = -60.0) -> np.ndarray:
    return rng.normal(0, 10 ** (db / 20), round(seconds * RATE)).astype(np.float32)


def run(stream: np.ndarray, block: int) -> tuple[np.ndarray, SilenceCutter]:
    cutter = SilenceCutter(stream[i:i + block] for i in range(0, len(stream), block))
    kept = list(cutter)
    return (np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)), cutter


@pytest.fixture(scope="module")
def sentences() -> list[np.ndarray]:
    return [speak(text) for text in ("The meeting will start soon.", "Please check the numbers.", "Thank you.")]


@pytest.mark.parametrize("block", [1000, 16000, 4096])
def test_gaps_are_cut_to_a_pad_either_side_and_short_pauses_kept(sentences: list[np.ndarray], block: int) -> None:
    rng = np.random.default_rng(0)
    parts = [hiss(3.0, rng), sentences[0], hiss(0.8, rng), sentences[1], hiss(20.0, rng), sentences[2], hiss(6.0, rng)]
    stream = np.concatenate(parts)
    kept, cutter = run(stream, block)
    # the 3 s before, the 20 s gap and the 6 s after are cut to ~PAD each side; the 0.8 s pause stays
    speech = sum(len(p) for p in sentences) + len(parts[2])
    assert speech <= len(kept) <= speech + round((4 * PAD + 0.5) * RATE), len(kept) / RATE  # + Silero's hangover
    # every kept sample is the stream's sample at the mapped time (a start maps after a cut, so use starts)
    for index in range(0, len(kept), 997):
        at = round(cutter.to_stream(index / RATE) * RATE)
        assert kept[index] == stream[at], (index, at)
    # the words come through whole: each sentence is in what was kept, in order
    where = [find(kept, sentence) for sentence in sentences]
    assert all(w >= 0 for w in where) and where == sorted(where)
    # the one cut inside the speech is in the 20 s gap: a window of speech may end there, between sentences
    cut = cutter.last_cut(0.0, len(kept) / RATE)
    assert cut is not None and where[1] + len(sentences[1]) < cut * RATE < where[2]
    assert cutter.last_cut(cut, len(kept) / RATE) is None and cutter.last_cut(0.0, cut - 0.01) is None
    # and a sentence's start and end map back to where it was placed
    placed = np.cumsum([0] + [len(p) for p in parts])
    for i, sentence in zip((1, 3, 5), sentences):
        start = where[(i - 1) // 2]
        assert cutter.to_stream(start / RATE) == pytest.approx(placed[i] / RATE, abs=1e-6)
        end = start + len(sentence)
        assert cutter.to_stream(end / RATE, end=True) == pytest.approx(placed[i + 1] / RATE, abs=1e-6)


def find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Index of `needle` in `haystack` (exactly equal samples), or -1."""
    loudest = int(np.argmax(np.abs(needle)))
    starts = np.flatnonzero(haystack == needle[loudest]) - loudest
    return next((int(i) for i in starts if 0 <= i <= len(haystack) - len(needle)
                 and np.array_equal(haystack[i:i + len(needle)], needle)), -1)


def test_silence_alone_yields_nothing_and_speech_alone_everything(sentences: list[np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    kept, _ = run(hiss(30.0, rng, db=-50.0), 4000)
    assert len(kept) == 0
    kept, _ = run(np.zeros(10 * RATE, dtype=np.float32), 4000)
    assert len(kept) == 0
    speech = sentences[1][: len(sentences[1]) // FRAME * FRAME - 100]  # not a whole number of frames
    kept, cutter = run(speech, 777)
    assert np.array_equal(kept, speech)
    assert cutter.to_stream(1.0) == pytest.approx(1.0)


def test_forgotten_pieces_are_gone_and_later_times_still_map(sentences: list[np.ndarray]) -> None:
    rng = np.random.default_rng(2)
    parts = [sentences[0], hiss(5.0, rng), sentences[1], hiss(5.0, rng), sentences[2]]
    stream = np.concatenate(parts)
    kept, cutter = run(stream, 8000)
    last = find(kept, sentences[2])
    before = cutter.to_stream(last / RATE)
    cutter.forget_before((last - 100) / RATE)
    assert cutter.to_stream(last / RATE) == before
    assert len(cutter._yielded_at) == 1  # only the piece the last sentence is in is remembered

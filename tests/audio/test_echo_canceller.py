"""The echo canceller's output stays in step with the microphone, through its own delay and its bypasses."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.audio.echo import EchoCanceller


@pytest.mark.parametrize("noise_suppression", [True, False])
def test_the_cleaned_stream_keeps_every_sample_in_place_across_bypasses(noise_suppression):
    """Blocks of 300-340 samples through the canceller (a silent speaker: nothing to cancel), then past it
    once the echo is gone (its `flush` and the raw microphone), and back, four times: the cleaned stream
    has as many samples as the microphone, each where it was heard; bypassed samples are the microphone's
    own. Before, the canceller's 14 ms delay was lost at each bypass and its first silence added."""
    rng = np.random.default_rng(0)
    mic = (0.1 * rng.standard_normal(160_000)).astype(np.float32)
    canceller, out, bypassed = EchoCanceller(noise_suppression=noise_suppression), [], []
    position = 0
    while position < mic.size:
        block = mic[position:position + int(rng.integers(300, 341))]
        if (position // 20_000) % 2 == 0:
            out.append(canceller.process(block, np.zeros_like(block)))
        else:
            flushed = canceller.flush()
            bypassed.append((sum(part.size for part in out) + flushed.size, block))
            out += [flushed, block]
        assert sum(part.size for part in out) + canceller.lag == position + block.size
        position += block.size
    stream = np.concatenate([*out, canceller.flush()])
    assert stream.size == mic.size
    for at, block in bypassed:
        np.testing.assert_array_equal(stream[at:at + block.size], block)
    cancelled = np.ones(mic.size, dtype=bool)  # the samples the canceller returned, its first 10 ms aside
    cancelled[:160] = False
    for at, block in bypassed:
        cancelled[at - 400:at + block.size + 400] = False  # (with a margin for the flushed ones)
    lags = range(-300, 301)
    correlation = [float(np.dot(mic[cancelled], np.roll(stream, -lag)[cancelled])) for lag in lags]
    assert lags[int(np.argmax(correlation))] == 0

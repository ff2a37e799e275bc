"""A room's response to a sound, made up: the direct sound, then a tail of reflections.

    h = room_response(rt60=0.5, drr_db=5.0)     # 16 kHz impulse response
    heard = scipy.signal.fftconvolve(played, h)[:played.size]

Exponentially decaying noise (60 dB in `rt60` seconds) from 2 ms after the direct sound on, scaled so that it
carries `drr_db` less energy than the direct sound: a laptop's own speakers in an ordinary room are RT60
0.3-0.5 s with the direct sound ~10 dB above the tail; a speaker across a living room, 0 dB or less.
"""

from __future__ import annotations

import numpy as np

RATE = 16_000


def room_response(rt60: float, drr_db: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    t = np.arange(max(1, int(rt60 * rate))) / rate
    tail = np.random.default_rng(seed).normal(size=t.size) * np.exp(-6.9 * t / max(rt60, 1e-6))
    tail[:int(0.002 * rate)] = 0.0
    if np.any(tail):
        tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail ** 2))
    tail[0] = 1.0
    return tail

"""Memory read bandwidth, the number decode speed follows: every generated token streams the
weights it uses through the CPU once, so tokens/s ~ bandwidth / bytes read per token."""

from __future__ import annotations

import time

import numpy as np

PROBE_BYTES = 256 * 1024**2  # well past any CPU cache
PROBE_RUNS = 4


def measure_read_bandwidth() -> float:
    """Bytes per second one thread reads from RAM (best of a few sums of a 256 MiB array, ~0.2 s).

    One thread understates what llama.cpp's threads reach together on a desktop, and matches it on
    a laptop whose memory controller one core already saturates; the plan shows it as measured."""
    data = np.ones(PROBE_BYTES // 8)
    best = 0.0
    for _ in range(PROBE_RUNS):
        start = time.perf_counter()
        data.sum()
        best = max(best, data.nbytes / (time.perf_counter() - start))
    return best

"""Carry what the assistant plays to the room's microphone through a made-up room response, live: the echo
path of `bench_voice.py --reverb RT60,DRR` (its null sinks have none, and a PulseAudio loopback cannot
convolve). parec reads a sink's monitor, each 20 ms block is convolved (overlap-add), pacat plays the result
into the microphone's sink.

    python benchmarks/reverberant_echo.py asink.monitor vsink 0.5 5     # RT60 0.5 s, direct 5 dB above the tail
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.signal import oaconvolve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "audio"))

from room_acoustics import RATE, room_response  # noqa: E402

BLOCK = 320  # samples (20 ms)


def main() -> None:
    source, sink, rt60, drr_db = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    response = room_response(rt60, drr_db)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped by the bench: its readers go with it
    stream = ("--format=float32le", f"--rate={RATE}", "--channels=1", "--latency-msec=10")
    reader = subprocess.Popen(["parec", f"--device={source}", *stream], stdout=subprocess.PIPE)
    player = subprocess.Popen(["pacat", f"--device={sink}", *stream], stdin=subprocess.PIPE)
    carried = np.zeros(response.size - 1)  # the tail of the blocks so far, still to be heard
    try:
        while data := reader.stdout.read(BLOCK * 4):
            block = np.frombuffer(data, dtype=np.float32).astype(np.float64)
            heard = oaconvolve(block, response)
            heard[:carried.size] += carried
            carried = heard[block.size:]
            player.stdin.write(heard[:block.size].astype(np.float32).tobytes())
    finally:
        for process in (reader, player):
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()

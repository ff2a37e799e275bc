"""A real PulseAudio server with null sinks, for tests and benchmarks that play and record (GUIDE §6).

    ensure_pulse()               # starts a per-user daemon unless one answers
    sink = NullSink("vsink")     # a virtual speaker; what is played into it comes back on "vsink.monitor"
    sink.make_default()          # programs that open the default devices use it: a real echo path

Everything is real: PortAudio's pulse/ALSA plugin talks to this server like to a laptop's. A reader
is kept on the monitor while the sink is default, because a duplex PortAudio stream on a null sink
with no other client stalls for seconds (the GUIDE's trap).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np


class PulseUnavailable(RuntimeError):
    """No PulseAudio here (not installed): audio tests cannot run."""


def _pactl(*args: str) -> str:
    return subprocess.run(["pactl", *args], check=True, capture_output=True, text=True, timeout=10).stdout


def pulse_running() -> bool:
    if shutil.which("pactl") is None:
        return False
    return subprocess.run(["pactl", "info"], capture_output=True, timeout=10).returncode == 0


def ensure_pulse() -> None:
    """Start a PulseAudio daemon for this user unless one already answers."""
    if pulse_running():
        return
    if shutil.which("pulseaudio") is None:
        raise PulseUnavailable("pulseaudio is not installed (apt-get install pulseaudio pulseaudio-utils)")
    subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1", "--system=false"], capture_output=True, timeout=30)
    for _ in range(100):
        if pulse_running():
            return
        time.sleep(0.05)
    raise PulseUnavailable("pulseaudio did not start")


class NullSink:
    """A virtual output device whose monitor source records everything played into it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.monitor = f"{name}.monitor"
        self._create()
        self._reader: subprocess.Popen[bytes] | None = None

    def _create(self) -> None:
        if self.name not in _pactl("list", "short", "sinks").split():
            _pactl("load-module", "module-null-sink", f"sink_name={self.name}",
                   f"sink_properties=device.description={self.name}")

    def make_default(self) -> None:
        """Route the default speaker into this sink and the default microphone from its monitor
        (again after a restarted server: the sink and the monitor's reader are recreated)."""
        self._create()
        _pactl("set-default-sink", self.name)
        _pactl("set-default-source", self.monitor)
        if self._reader is None or self._reader.poll() is not None:
            self._reader = subprocess.Popen(["parec", "--latency-msec=10", "-d", self.monitor],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.terminate()
            self._reader.wait(timeout=5)
            self._reader = None


def play_into(sink: str, samples: np.ndarray, path: Path, rate: int = 16_000) -> None:
    """Play mono float `samples` into `sink` (a person speaking into the room), waiting until played."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    subprocess.run(["paplay", f"--device={sink}", str(path)], check=True, timeout=60)

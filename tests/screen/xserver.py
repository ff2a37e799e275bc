"""Helpers for the screen tests: an Xvfb server on a free display and waiting for a window to be drawn."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

import numpy as np

SCREEN_SIZE = (1280, 800)


def start_xvfb(width: int, height: int) -> tuple[subprocess.Popen[bytes], str]:
    """Xvfb on a display number it picks itself (-displayfd: never collides with another test run)."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
                             "-nolisten", "tcp"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        proc.wait()
        raise RuntimeError("Xvfb did not start")
    return proc, f":{number}"


@dataclass
class Term:
    proc: subprocess.Popen[bytes]
    title: str


def wait_drawn(display: str, title: str, timeout: float = 20.0) -> None:
    """Until a window titled `title` is mapped and its pixels have stopped changing (text drawn)."""
    from runtime.screen.capture import ScreenCapture
    from runtime.screen.privacy import PrivacyPolicy
    from runtime.screen.windows import list_windows

    deadline = time.monotonic() + timeout
    with ScreenCapture(PrivacyPolicy((), ()), display) as cap:
        previous = None
        while time.monotonic() < deadline:
            match = [w for w in list_windows(cap._x) if w.title == title]
            if match:
                pixels = cap.grab(region=match[0].rect.clip(cap.monitors()[0])).pixels
                if previous is not None and previous.shape == pixels.shape and np.array_equal(previous, pixels) \
                        and pixels.min() != pixels.max():
                    return
                previous = pixels
            time.sleep(0.2)
    raise TimeoutError(f"window {title!r} was not drawn within {timeout} s")

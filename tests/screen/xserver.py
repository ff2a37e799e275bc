"""Helpers for the screen tests: an Xvfb server on a free display and waiting for a window to be drawn."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

import numpy as np

SCREEN_SIZE = (1280, 800)


def start_xvfb(width: int, height: int) -> tuple[subprocess.Popen[bytes], str]:
    """Xvfb on a display number it picks itself (-displayfd: never collides with another test run). -noreset:
    by default the server resets when its last client leaves, and a test connecting during that reset is
    refused ("Connection reset by peer")."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
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


def words(text: str) -> list[str]:
    """Lower-case words without surrounding punctuation: what word accuracy compares."""
    out = []
    for token in text.lower().split():
        token = token.strip(".,:;!?\"'()[]{}<>")
        if token:
            out.append(token)
    return out


def word_accuracy(expected: str, got: str) -> float:
    """1 - word error rate (Levenshtein over words, the way jiwer counts), floored at 0."""
    ref, hyp = words(expected), words(got)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return max(0.0, 1.0 - row[-1] / max(1, len(ref)))


TERMINAL_TEXT = """user@laptop:~/project$ git status
On branch main
Your branch is ahead of origin/main by 2 commits.
Changes not staged for commit:
modified: runtime/screen/capture.py
user@laptop:~/project$ python3 train.py --epochs 3
Traceback (most recent call last):
File "train.py", line 42, in main
ValueError: invalid literal for int() with base 10: 'three'
user@laptop:~/project$ ls -la
total 48
drwxr-xr-x 5 user user 4096 Dec 2 16:20 src
-rw-r--r-- 1 user user 1523 Dec 2 16:18 README.md
user@laptop:~/project$ df -h /home
Filesystem Size Used Avail Use% Mounted on
/dev/nvme0n1p2 468G 201G 244G 46% /home"""


def show_image(display: str, pixels: np.ndarray, x: int, y: int, title: str) -> object:
    """A window showing an RGB image at (x, y): a rendered page on the virtual screen. Close the returned
    Xlib connection to remove it."""
    from Xlib import X
    from Xlib import display as xdisplay

    conn = xdisplay.Display(display)
    screen = conn.screen()
    height, width = pixels.shape[:2]
    window = screen.root.create_window(x, y, width, height, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
                                       background_pixel=screen.white_pixel, event_mask=X.ExposureMask)
    window.set_wm_name(title)
    window.set_wm_class("page", "Page")
    window.map()
    gc = window.create_gc()
    bgrx = np.zeros((height, width, 4), dtype=np.uint8)
    bgrx[..., :3] = pixels[..., ::-1]
    rows = max(1, 200_000 // (width * 4))  # put_image requests stay under the X request size limit
    while True:
        event = conn.next_event()
        if event.type == X.Expose:
            break
    for top in range(0, height, rows):
        part = bgrx[top:top + rows]
        window.put_image(gc, 0, top, width, part.shape[0], X.ZPixmap, screen.root_depth, 0, part.tobytes())
    conn.sync()
    return conn


DOCUMENT_TEXT = """Quarterly report on the regional water supply
The treatment plant processed more water this quarter than in any
previous season, mainly because of the dry weather in July and August.
Maintenance of the northern pipeline finished two weeks early, and the
budget for the new filters was approved by the council in September.
Customers reported fewer interruptions, and the average repair time fell
from six hours to just under four hours. Next year the team plans to
replace the oldest pumps and to publish water quality results every month."""


def render_page(text: str, width: int = 900, size: int = 20) -> np.ndarray:
    """Document-like text (a proportional serif font, black on white) as an RGB image."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype("DejaVuSerif.ttf", size)
    lines = text.split("\n")
    line_height = int(size * 1.5)
    image = Image.new("RGB", (width, line_height * len(lines) + 2 * size), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((size, size + i * line_height), line, font=font, fill="black")
    return np.asarray(image)

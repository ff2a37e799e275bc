"""Change detection on real captures: identical frames are skipped, a one-line text change is caught."""

from __future__ import annotations

import subprocess

import numpy as np
from xserver import wait_drawn

from runtime.screen.capture import ScreenCapture
from runtime.screen.change import ChangeDetector
from runtime.screen.windows import list_windows, open_display


def test_identical_frames_are_skipped_and_a_one_line_change_is_caught(display, xterm):
    text = "\n".join(f"line {i}: the quick brown fox jumps over the lazy dog" for i in range(12))
    xterm("doc", text, geometry="80x20+0+0")
    detector = ChangeDetector()
    with ScreenCapture() as cap:
        assert detector.check(cap.grab().pixels).changed  # the first frame
        for _ in range(3):
            assert not detector.check(cap.grab().pixels).changed
        # one more line of text appears in the window (a second xterm showing the edited text, same place)
        edited = text.replace("line 5: the quick brown fox", "line 5: the quick brown cat")
        proc = subprocess.Popen(["xterm", "-display", display, "-title", "doc2", "-geometry", "80x20+0+0",
                                 "-fa", "DejaVu Sans Mono", "-fs", "14", "-bg", "white", "-fg", "black", "+sb",
                                 "-e", "sh", "-c", 'printf "%s" "$0"; exec sleep 600', edited])
        try:
            wait_drawn(display, "doc2")
            change = detector.check(cap.grab().pixels)
            with open_display() as x:
                rect = next(w.rect for w in list_windows(x) if w.title == "doc2")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert change.changed
    # only the tiles around the one changed word: all inside the window, a handful of them
    assert 1 <= len(change.tiles) <= 4
    for tile in change.tiles:
        assert rect.clip(tile) is not None


def test_uniform_brightness_change_is_not_a_change_but_a_single_character_is():
    rng = np.random.default_rng(0)
    frame = np.full((400, 640, 3), 200, dtype=np.uint8)
    frame[100:116, 50:400] = rng.integers(0, 120, size=(16, 350, 3), dtype=np.uint8)  # a line of "text"
    detector = ChangeDetector()
    detector.check(frame)
    dimmed = (frame * 0.8).astype(np.uint8)
    assert not detector.check(dimmed).changed
    edited = dimmed.copy()
    edited[100:116, 300:310] = 160  # one character erased
    change = detector.check(edited)
    assert change.changed and len(change.tiles) == 1

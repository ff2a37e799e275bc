"""Capture, window listing and the privacy mask on a real X server with real xterm windows."""

from __future__ import annotations

import numpy as np
import pytest
from xserver import SCREEN_SIZE, start_xvfb

from edge_ai.errors import EdgeAIError
from runtime.screen.capture import STRIP_PIXELS, ScreenCapture, downscale, parse_region
from runtime.screen.privacy import PrivacyPolicy, private_mask
from runtime.screen.windows import Rect, Window, check_x11_session, list_windows, open_display


def _window_rect(display: str, title: str) -> Rect:
    with open_display(display) as x:
        return next(w.rect for w in list_windows(x) if w.title == title)


def test_whole_screen_is_captured_with_a_window_on_it(display, xterm):
    xterm("plain", "hello", geometry="40x5+100+50")
    with ScreenCapture() as cap:
        frame = cap.grab()
    assert frame.pixels.shape == (SCREEN_SIZE[1], SCREEN_SIZE[0], 3)
    assert frame.pixels.dtype == np.uint8
    rect = _window_rect(display, "plain")
    inside = frame.pixels[rect.y:rect.y + rect.height, rect.x:rect.x + rect.width]
    assert (inside == 255).mean() > 0.8  # the white xterm
    assert frame.pixels[700:, 1000:].max() == 0  # the empty (black) root window
    assert frame.masked_pixels == 0


def test_windows_are_listed_bottom_to_top_with_title_class_and_geometry(display, xterm):
    xterm("lower", "a", geometry="40x5+10+10")
    xterm("upper", "b", geometry="40x5+60+40")
    with open_display() as x:
        windows = [w for w in list_windows(x) if w.title in ("lower", "upper")]
    assert [w.title for w in windows] == ["lower", "upper"]
    assert windows[0].stack < windows[1].stack
    assert windows[0].wm_class == ("xterm", "XTerm")
    assert (windows[0].rect.x, windows[0].rect.y) == (10, 10)
    assert windows[0].rect.width > 100 and windows[0].rect.height > 50


def test_an_excluded_window_is_masked_while_a_window_above_it_stays(display, xterm):
    xterm("KeePassXC", "SECRET " * 30, geometry="60x12+20+20")
    xterm("notes", "visible " * 10, geometry="30x4+120+60")  # on top, overlapping the password manager
    secret, notes = _window_rect(display, "KeePassXC"), _window_rect(display, "notes")
    with ScreenCapture() as cap:
        frame = cap.grab()
    px = frame.pixels
    secret_only = np.zeros(px.shape[:2], dtype=bool)
    secret_only[secret.y:secret.y + secret.height, secret.x:secret.x + secret.width] = True
    secret_only[notes.y:notes.y + notes.height, notes.x:notes.x + notes.width] = False
    assert px[secret_only].max() == 0  # every pixel of the private window that shows is blanked
    assert frame.masked_pixels == int(secret_only.sum())
    on_top = px[notes.y:notes.y + notes.height, notes.x:notes.x + notes.width]
    assert (on_top == 255).mean() > 0.8  # the window above it is untouched


def test_an_excluded_window_above_a_normal_one_hides_it_there(display, xterm):
    xterm("notes", "visible " * 10, geometry="30x4+120+60")
    xterm("Bitwarden", "SECRET " * 30, geometry="60x12+20+20")  # on top
    secret = _window_rect(display, "Bitwarden")
    with ScreenCapture() as cap:
        px = cap.grab().pixels
    assert px[secret.y:secret.y + secret.height, secret.x:secret.x + secret.width].max() == 0


def test_mask_follows_stacking_and_matches_title_or_class_case_insensitively():
    policy = PrivacyPolicy(excluded_titles=("incognito",), excluded_classes=("keepassxc",))
    area = Rect(0, 0, 100, 100)
    private = Window(1, 1, "New Tab - Google Chrome (Incognito)", ("chrome", "Chrome"), Rect(0, 0, 60, 60), 0)
    by_class = Window(2, 2, "db.kdbx", ("keepassxc", "KeePassXC"), Rect(80, 80, 50, 50), 1)
    above = Window(3, 3, "editor", ("gedit", "Gedit"), Rect(10, 10, 20, 20), 2)
    mask = private_mask([private, by_class, above], policy, area)
    assert mask is not None
    assert mask[0:60, 0:60].sum() == 60 * 60 - 20 * 20
    assert not mask[10:30, 10:30].any()
    assert mask[80:100, 80:100].all()  # clipped to the area
    assert private_mask([above], policy, area) is None


def test_region_monitor_and_downscale(display, xterm):
    xterm("plain", "hello", geometry="40x5+100+50")
    with ScreenCapture() as cap:
        frame = cap.grab(region=Rect(100, 50, 200, 100))
        whole = cap.grab(monitor=1)
    assert frame.pixels.shape == (100, 200, 3)
    assert frame.rect == Rect(100, 50, 200, 100)
    assert whole.pixels.shape[:2] == (SCREEN_SIZE[1], SCREEN_SIZE[0])
    small = downscale(whole.pixels, 640)
    assert small.shape == (400, 640, 3)
    assert downscale(frame.pixels, 640).shape == frame.pixels.shape  # never upscaled


def test_active_window_is_the_focused_one(display, xterm):
    from Xlib import X

    xterm("first", "a", geometry="20x3+10+10")
    xterm("second", "b", geometry="30x4+300+200")
    with open_display() as x:
        target = next(w for w in list_windows(x) if w.title == "second")
        x.create_resource_object("window", target.client_id).set_input_focus(X.RevertToParent, X.CurrentTime)
        x.sync()
        with ScreenCapture() as cap:
            frame = cap.grab(window=True)
    assert frame.rect == target.rect
    assert frame.pixels.shape == (target.rect.height, target.rect.width, 3)


@pytest.mark.parametrize("region, message", [
    (Rect(1200, 700, 200, 200), "not inside the screen"),
    (Rect(-5, 0, 10, 10), "not inside the screen"),
    (Rect(0, 0, 0, 10), "empty"),
])
def test_bad_regions_are_refused(display, region, message):
    with ScreenCapture() as cap, pytest.raises(EdgeAIError, match=message):
        cap.grab(region=region)


def test_bad_monitor_and_region_text_are_refused(display):
    with ScreenCapture() as cap, pytest.raises(EdgeAIError, match="no monitor 5"):
        cap.grab(monitor=5)
    with pytest.raises(EdgeAIError, match="x,y,w,h"):
        parse_region("10,10,abc")


def test_no_display_and_wayland_give_one_line_errors():
    with pytest.raises(EdgeAIError, match="DISPLAY is not set"):
        check_x11_session({})
    with pytest.raises(EdgeAIError, match="Wayland session"):
        check_x11_session({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"})
    with pytest.raises(EdgeAIError, match="cannot open X display"):
        ScreenCapture(display=":987")


def test_an_8k_screen_is_captured_in_strips_with_bounded_memory():
    """A real 7680x4320 X server: the frame comes back whole; the grab never holds a second full-size copy."""
    import tracemalloc

    proc, name = start_xvfb(7680, 4320)
    try:
        with ScreenCapture(display=name) as cap:
            tracemalloc.start()
            frame = cap.grab()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert frame.pixels.shape == (4320, 7680, 3)
    # the RGB frame plus a few copies of one 4 MB strip, not a 4-byte (133 MB) copy of the screen
    assert peak < frame.pixels.nbytes + 4 * 4 * STRIP_PIXELS


def test_a_window_whose_title_turns_private_is_masked_on_the_next_grab(display, xterm):
    xterm("Bank statement draft", "balance 1234 " * 10, geometry="50x6+40+40")
    with ScreenCapture(PrivacyPolicy(excluded_titles=("Online Banking",), excluded_classes=())) as cap:
        assert cap.grab().masked_pixels == 0
        with open_display() as x:
            target = next(w for w in list_windows(x) if w.title == "Bank statement draft")
            window = x.create_resource_object("window", target.client_id)
            window.set_wm_name("Online Banking - Account")  # as a browser tab switching to the bank's site
            x.sync()
        frame = cap.grab()  # the very next grab: the window list is re-read on the PropertyNotify
    rect = target.rect
    assert frame.masked_pixels == rect.width * rect.height
    assert frame.pixels[rect.y:rect.y + rect.height, rect.x:rect.x + rect.width].max() == 0


def test_window_capture_without_a_focused_window_says_so(display, xterm):
    from Xlib import X

    xterm("plain", "hello", geometry="20x3+10+10")
    with open_display() as x:
        x.set_input_focus(X.NONE, X.RevertToNone, X.CurrentTime)
        x.sync()
        with ScreenCapture() as cap, pytest.raises(EdgeAIError, match="no visible active window"):
            cap.grab(window=True)

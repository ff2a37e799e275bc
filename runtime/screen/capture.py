"""Screen capture with mss, private windows blanked before the frame leaves this module.

    with ScreenCapture(PrivacyPolicy()) as cap:
        frame = cap.grab()                          # the whole screen (every monitor)
        frame = cap.grab(monitor=1)                 # one monitor (1-based, as mss numbers them)
        frame = cap.grab(region=Rect(0, 0, 640, 400))
        frame = cap.grab(window=True)               # the active window
        small = downscale(frame.pixels, 1024)       # a copy for a model

The windows are listed before and after the pixels are read and the private parts of both
listings are blanked, so a password manager opened or moved during the grab is masked where it
was and where it went. Should the windows not be listable, nothing is returned (fail closed).

Large screens are read in strips of rows, each converted to RGB and masked into the output, so an
8K screen costs the 3-byte frame plus one strip, never a second 4-byte copy of it; a capture larger
than MAX_PIXELS is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_ai.errors import EdgeAIError
from runtime.screen.image_file import MAX_PIXELS
from runtime.screen.privacy import PrivacyPolicy, apply_mask, private_mask
from runtime.screen.windows import Rect, Window, WindowTracker, active_window, check_x11_session, connect

STRIP_PIXELS = 1 << 20  # pixels read per mss grab: 4 MB of BGRA at a time (a 1280x800 screen is one strip)


@dataclass(frozen=True)
class Frame:
    """Captured pixels with every private window already blanked."""

    pixels: np.ndarray  # [height, width, 3] uint8 RGB
    rect: Rect  # where on the root window it was taken
    masked_pixels: int  # how many pixels were blanked as private


class ScreenCapture:
    """One X11 connection for window listing and one mss instance, reused across grabs (opening costs ms)."""

    def __init__(self, policy: PrivacyPolicy | None = None, display: str | None = None) -> None:
        self.policy = policy or PrivacyPolicy()
        name = display or check_x11_session()
        self._x = connect(name)
        self._tracker = WindowTracker(self._x)
        self._mask_key: tuple[int, Rect] | None = None
        self._mask: np.ndarray | None = None
        try:
            import mss

            self._mss = mss.MSS(display=name)
        except ImportError as exc:
            self._x.close()
            raise EdgeAIError("screen capture needs mss; install the screen extra: pip install 'edge-ai[screen]'") from exc
        except Exception as exc:  # mss.ScreenShotError: no XRandR, bad display
            self._x.close()
            raise EdgeAIError(f"cannot capture display {name!r}: {exc}") from None

    def __enter__(self) -> ScreenCapture:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._mss.close()
        self._x.close()

    def monitors(self) -> list[Rect]:
        """Index 0 is the whole virtual screen; 1.. are the monitors (mss's numbering)."""
        return [Rect(m["left"], m["top"], m["width"], m["height"]) for m in self._mss.monitors]

    def area(self, region: Rect | None = None, monitor: int | None = None, window: bool = False) -> Rect:
        """The rectangle a grab with these arguments reads (checked against the screen)."""
        if sum(x is not None and x is not False for x in (region, monitor, window)) > 1:
            raise EdgeAIError("choose one of a region, a monitor or the active window")
        monitors = self.monitors()
        screen = monitors[0]
        if monitor is not None:
            if not 1 <= monitor < len(monitors):
                raise EdgeAIError(f"no monitor {monitor}: this screen has {len(monitors) - 1} (numbered from 1)")
            return monitors[monitor]
        if window:
            win = active_window(self._x)
            rect = win.rect.clip(screen)
            if rect is None:
                raise EdgeAIError(f"the active window {win.title!r} is entirely off screen; move it into view")
            return rect
        if region is not None:
            if region.width <= 0 or region.height <= 0:
                raise EdgeAIError(f"region {region.width}x{region.height} is empty; give a positive width and height")
            inside = region.clip(screen)
            if inside != region:
                raise EdgeAIError(f"region {region.x},{region.y},{region.width},{region.height} is not inside the "
                                  f"screen (0,0 to {screen.width}x{screen.height}); choose one that fits")
            return region
        return screen

    def grab(self, region: Rect | None = None, monitor: int | None = None, window: bool = False) -> Frame:
        """Capture the screen, a monitor, a region or the active window, with private windows blanked."""
        area = self.area(region, monitor, window)
        if area.width * area.height > MAX_PIXELS:
            raise EdgeAIError(f"the capture is {area.width}x{area.height}, over the {MAX_PIXELS / 1e6:.0f} MP limit; "
                              "capture one monitor (--monitor N) or a region")
        before = self._windows()
        mask = self._private_mask(before, area)
        pixels = self._read(area)
        after = self._windows()
        if after is not before:  # the windows changed during the grab: blank what was private before and after
            late = private_mask(after, self.policy, area)
            mask = late if mask is None else mask if late is None else mask | late
        apply_mask(pixels, mask)
        return Frame(pixels, area, int(mask.sum()) if mask is not None else 0)

    def _windows(self) -> list[Window]:
        try:
            return self._tracker.windows()
        except Exception as exc:  # a lost X connection: refuse rather than return unmasked pixels
            raise EdgeAIError(f"cannot list the windows to mask private ones ({exc}); nothing was captured") from None

    def _private_mask(self, windows: list[Window], area: Rect) -> np.ndarray | None:
        """The mask for this window list and area, kept while neither changes (a static screen)."""
        key = (self._tracker.generation, area)
        if key != self._mask_key:
            self._mask, self._mask_key = private_mask(windows, self.policy, area), key
        return self._mask

    def _read(self, area: Rect) -> np.ndarray:
        """The area's pixels as RGB, read in strips of rows."""
        import cv2

        out = np.empty((area.height, area.width, 3), dtype=np.uint8)
        rows = max(1, STRIP_PIXELS // area.width)
        for top in range(0, area.height, rows):
            height = min(rows, area.height - top)
            shot = self._grab({"left": area.x, "top": area.y + top, "width": area.width, "height": height})
            bgra = np.frombuffer(shot.raw, dtype=np.uint8).reshape(shot.height, shot.width, 4)
            # OpenCV's SIMD swap: 0.6 ms at 1280x800, against 5 ms for PIL's unpacker and 13 ms for numpy's strided copy
            cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB, dst=out[top:top + height])
        return out

    def _grab(self, box: dict[str, int]) -> Any:
        """An mss ScreenShot (BGRA bytes in `.raw`)."""
        try:
            return self._mss.grab(box)
        except Exception as exc:  # mss.ScreenShotError
            raise EdgeAIError(f"screen capture failed: {exc}") from None


def downscale(pixels: np.ndarray, width: int) -> np.ndarray:
    """A copy at most `width` pixels wide (aspect kept, area-averaged so text strokes are not aliased away)."""
    height, current = pixels.shape[:2]
    if current <= width:
        return pixels.copy()
    from PIL import Image

    size = (width, max(1, round(height * width / current)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))


def parse_region(text: str) -> Rect:
    """`x,y,w,h` -> Rect, or a one-line error."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise EdgeAIError(f"region {text!r} is not x,y,w,h in whole pixels (e.g. 0,0,640,400)") from None
    return Rect(x, y, w, h)

"""Which windows are private, and the mask that blanks them out of a captured frame.

Screenpipe recorded incognito windows because its check looked only at the focused window, after
the frame was already in memory. Here every window on the screen is checked, focused or not, and
capture (runtime.screen.capture) applies the mask before returning a frame, so OCR, a vision model
or the disk only ever see masked pixels. The mask is painted like the screen is: windows bottom to
top, a private window sets its rectangle, any window above it clears its own; so a normal window
lying over a private one stays readable where it covers it, and nothing of the private one shows.

Patterns are case-insensitive substrings of the title or of either WM_CLASS string: broad on
purpose (a window titled "Bank holiday" is masked too; leaking a bank statement is the worse error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_ai.config import SCREEN_EXCLUDED_CLASSES, SCREEN_EXCLUDED_TITLES, ScreenSettings
from runtime.screen.windows import Rect, Window

# password managers, banking, private browsing (the `screen.excluded_*` settings' defaults)
DEFAULT_EXCLUDED_TITLES: tuple[str, ...] = tuple(SCREEN_EXCLUDED_TITLES)
DEFAULT_EXCLUDED_CLASSES: tuple[str, ...] = tuple(SCREEN_EXCLUDED_CLASSES)
MASK_VALUE = 0  # masked pixels are black: no text for OCR, nothing for a vision model


@dataclass(frozen=True)
class PrivacyPolicy:
    """Title and WM_CLASS substrings that mark a window as private."""

    excluded_titles: tuple[str, ...] = DEFAULT_EXCLUDED_TITLES
    excluded_classes: tuple[str, ...] = DEFAULT_EXCLUDED_CLASSES

    @classmethod
    def from_settings(cls, settings: ScreenSettings) -> PrivacyPolicy:
        return cls(tuple(settings.excluded_titles), tuple(settings.excluded_classes))

    def is_private(self, window: Window) -> bool:
        title = window.title.casefold()
        if any(p.casefold() in title for p in self.excluded_titles if p):
            return True
        classes = [c.casefold() for c in window.wm_class]
        return any(p.casefold() in c for p in self.excluded_classes if p for c in classes)


def private_mask(windows: Sequence[Window], policy: PrivacyPolicy, area: Rect) -> np.ndarray | None:
    """A boolean [height, width] mask of `area` (True = private pixel), or None when nothing private shows.

    `windows` are bottom to top (runtime.screen.windows.list_windows order).
    """
    if not any(policy.is_private(w) for w in windows):
        return None
    mask = np.zeros((area.height, area.width), dtype=bool)
    for window in sorted(windows, key=lambda w: w.stack):
        part = window.rect.clip(area)
        if part is None:
            continue
        y0, x0 = part.y - area.y, part.x - area.x
        mask[y0:y0 + part.height, x0:x0 + part.width] = policy.is_private(window)
    return mask if mask.any() else None


def apply_mask(pixels: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Blank the private pixels of an [H, W, C] frame in place; returns it."""
    if mask is not None:
        pixels[mask] = MASK_VALUE
    return pixels

"""The screen as a model gets it: captured with private windows blanked, read in order, cut to a token
budget, PII and secrets replaced. One path for `edge-ai screen ask` and the terminal app, so what
`edge-ai screen ocr --redact` shows is what either of them sends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_ai.errors import EdgeAIError
from runtime.screen.capture import ScreenCapture, downscale
from runtime.screen.ocr import OcrResult, ScreenOCR
from runtime.screen.privacy import PrivacyPolicy
from runtime.screen.redact import redact
from runtime.screen.windows import Rect

if TYPE_CHECKING:
    from edge_ai.config import ScreenSettings


@dataclass(frozen=True)
class ScreenText:
    text: str  # what the model gets
    lines: int  # lines of text OCR found
    masked_pixels: int  # pixels of private windows blanked before OCR
    redactions: int  # PII and secrets replaced


@dataclass(frozen=True)
class ScreenRead:
    """The screen read, before it is cut to a budget (the model's tokenizer may not be loaded yet)."""

    result: OcrResult
    masked_pixels: int
    image: np.ndarray | None = None  # for a vision model: the capture, private windows blanked, downscaled

    def for_model(self, budget_tokens: int, count_tokens: Callable[[str], int] | None = None) -> ScreenText:
        """The text a model gets: cut to `budget_tokens`, PII and secrets replaced."""
        redacted = redact(self.result.as_text(budget_tokens, count_tokens))
        return ScreenText(redacted.text, len(self.result.lines), self.masked_pixels, len(redacted.findings))


def read_screen(settings: ScreenSettings, ocr: ScreenOCR, *, region: Rect | None = None, window: bool = False,
                monitor: int | None = None, image_width: int | None = None) -> ScreenRead:
    """Grab and read the screen (blocking: OCR of a full screen takes seconds on 2 cores); with
    `image_width`, keep a copy of the capture that wide for a vision model (then no text is no error)."""
    with ScreenCapture(PrivacyPolicy.from_settings(settings)) as capture:
        frame = capture.grab(region=region, monitor=monitor, window=window)
    result = ocr.read(frame.pixels)
    if not result.lines and image_width is None:
        raise EdgeAIError("no text found on the screen; OCR reads text only (is the window you mean visible?)")
    return ScreenRead(result, frame.masked_pixels, downscale(frame.pixels, image_width) if image_width else None)


def with_screen(screen_text: str, message: str) -> str:
    """A user message with the screen's text before it, as the model reads it."""
    return f"Text on my screen:\n{screen_text}\n\n{message.strip()}"

"""Screen context in the chat: the screen's text, private windows blanked and PII replaced, attached to
a message after the user has seen (and may edit) exactly what will be sent.

F12 (or `/screen` alone) reads the screen and attaches it to the next message; `/screen QUESTION`
reads it and sends the question with it; "always attach" does that for every message. Reading runs
in a thread (OCR of a full screen takes seconds on 2 cores) and nothing of the screen reaches the
model or the history unless the user presses Attach in the preview.

With a vision model (screen.vision_mmproj) the screen's image goes with the text: private windows
blanked, downscaled to screen.downscale_width. It is kept in memory with its message for the turns
after it (the model's cache holds it), never written to the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_ai.errors import EdgeAIError
from tui.screens.screen_preview import ScreenPreviewScreen

if TYPE_CHECKING:
    import numpy as np

    from runtime.screen.context import ScreenText
    from runtime.screen.ocr import ScreenOCR
    from tui.screens.chat import ChatScreen

COMMAND = "/screen"


@dataclass(frozen=True)
class Attachment:
    """What goes with a message: the reviewed screen text, and the image for a vision model."""

    text: str
    image: np.ndarray | None = None

    def message(self, message: str) -> str:
        """`message` with the screen's text before it (the message alone when the text was emptied)."""
        from runtime.screen.context import with_screen

        return with_screen(self.text, message) if self.text else message


def screen_command(text: str) -> str | None:
    """The question after `/screen` ("" for `/screen` alone), or None when `text` is not that command."""
    head, _, rest = text.strip().partition(" ")
    return rest.strip() if head == COMMAND else None


class ScreenContext:
    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.always = False  # attach the screen to every message sent
        self.pending: Attachment | None = None  # the screen attached to the next message
        self._ocr: ScreenOCR | None = None  # loaded on first use (~2 s), then kept

    def attach(self, message: str | None = None) -> None:
        """Read the screen and show it; attached, it goes with `message` at once, or (None) with the next one."""
        self.screen.status.state = "reading the screen…"
        self.screen.run_worker(lambda: self._read(message), thread=True, group="screen", exclusive=True,
                               exit_on_error=False)

    def toggle_always(self) -> None:
        self.always = not self.always
        self.screen.notify("Every message you send now takes the screen's text (you review it first)."
                           if self.always else "Messages no longer take the screen's text.", title="Screen")
        self._show()

    def take(self, message: str) -> tuple[str, np.ndarray | None]:
        """`message` with the attached screen text, if any, and the attached image (then the attachment
        is used up)."""
        if self.pending is None:
            return message, None
        attached, self.pending = self.pending, None
        self._show()
        return attached.message(message), attached.image

    def _read(self, message: str | None) -> None:
        """On a worker thread: capture, OCR and redact, then hand the text to the app's thread for review."""
        from runtime.screen.context import read_screen

        call = self.screen.app.call_from_thread
        settings = self.screen.edge_app.cfg.screen
        try:
            if self._ocr is None:
                from runtime.screen.ocr import ScreenOCR

                self._ocr = ScreenOCR()
            read = read_screen(settings, self._ocr,
                               image_width=settings.downscale_width if settings.vision_mmproj else None)
            found = read.for_model(settings.ocr_budget_tokens)
        except Exception as exc:  # a missing display, an OCR failure: said, and chat goes on
            call(self._failed, str(exc) if isinstance(exc, EdgeAIError) else f"reading the screen failed: {exc}")
            return
        call(self._review, found, read.image, message)

    def _failed(self, error: str) -> None:
        self.screen.status.state = ""
        self.screen.notify(error, title="Screen", severity="error")

    def _review(self, found: ScreenText, image: np.ndarray | None, message: str | None) -> None:
        self.screen.status.state = ""
        note = (f"{found.lines} lines read; {found.masked_pixels} pixels of private windows blanked; "
                f"{found.redactions} PII/secrets replaced."
                + (f"  The image ({image.shape[1]}x{image.shape[0]}, private windows blanked) goes too."
                   if image is not None else "")
                + (f"  Message: {message}" if message else ""))
        self.screen.app.push_screen(ScreenPreviewScreen(found.text, note, image=image is not None),
                                    callback=lambda edited: self._reviewed(edited, image, message))

    def _reviewed(self, edited: str | None, image: np.ndarray | None, message: str | None) -> None:
        if edited is None:
            self.screen.notify("Screen not attached.", title="Screen")
            return
        attached = Attachment(edited, image)
        if message:
            self.screen.run_worker(self.screen.send_message(attached.message(message), image=image),
                                   exit_on_error=False)
        else:
            self.pending = attached
            self._show()

    def _show(self) -> None:
        pending = self.pending
        if pending is None:
            self.screen.status.attachment = "screen: always" if self.always else ""
            return
        image = " + image" if pending.image is not None else ""
        self.screen.status.attachment = f"screen attached ({len(pending.text.split())} words{image})"

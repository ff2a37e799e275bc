"""Screen context in the chat: the screen's text, private windows blanked and PII replaced, attached to
a message after the user has seen (and may edit) exactly what will be sent.

F12 (or `/screen` alone) reads the screen and attaches it to the next message; `/screen QUESTION`
reads it and sends the question with it; "always attach" does that for every message. Reading runs
in a thread (OCR of a full screen takes seconds on 2 cores) and nothing of the screen reaches the
model or the history unless the user presses Attach in the preview.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_ai.errors import EdgeAIError
from tui.screens.screen_preview import ScreenPreviewScreen

if TYPE_CHECKING:
    from runtime.screen.context import ScreenText
    from runtime.screen.ocr import ScreenOCR
    from tui.screens.chat import ChatScreen

COMMAND = "/screen"


def screen_command(text: str) -> str | None:
    """The question after `/screen` ("" for `/screen` alone), or None when `text` is not that command."""
    head, _, rest = text.strip().partition(" ")
    return rest.strip() if head == COMMAND else None


class ScreenContext:
    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.always = False  # attach the screen to every message sent
        self.pending: str | None = None  # screen text attached to the next message
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

    def take(self, message: str) -> str:
        """`message` with the attached screen text, if any (then the attachment is used up)."""
        from runtime.screen.context import with_screen

        if self.pending is None:
            return message
        text, self.pending = with_screen(self.pending, message), None
        self._show()
        return text

    def _read(self, message: str | None) -> None:
        """On a worker thread: capture, OCR and redact, then hand the text to the app's thread for review."""
        from runtime.screen.context import read_screen

        call = self.screen.app.call_from_thread
        try:
            if self._ocr is None:
                from runtime.screen.ocr import ScreenOCR

                self._ocr = ScreenOCR()
            settings = self.screen.edge_app.cfg.screen
            found = read_screen(settings, self._ocr).for_model(settings.ocr_budget_tokens)
        except Exception as exc:  # a missing display, an OCR failure: said, and chat goes on
            call(self._failed, str(exc) if isinstance(exc, EdgeAIError) else f"reading the screen failed: {exc}")
            return
        call(self._review, found, message)

    def _failed(self, error: str) -> None:
        self.screen.status.state = ""
        self.screen.notify(error, title="Screen", severity="error")

    def _review(self, found: ScreenText, message: str | None) -> None:
        self.screen.status.state = ""
        note = (f"{found.lines} lines read; {found.masked_pixels} pixels of private windows blanked; "
                f"{found.redactions} PII/secrets replaced." + (f"  Message: {message}" if message else ""))
        self.screen.app.push_screen(ScreenPreviewScreen(found.text, note),
                                    callback=lambda edited: self._reviewed(edited, message))

    def _reviewed(self, edited: str | None, message: str | None) -> None:
        from runtime.screen.context import with_screen

        if edited is None:
            self.screen.notify("Screen text not attached.", title="Screen")
        elif message:
            self.screen.run_worker(self.screen.send_message(with_screen(edited, message)), exit_on_error=False)
        else:
            self.pending = edited
            self._show()

    def _show(self) -> None:
        words = len(self.pending.split()) if self.pending else 0
        self.screen.status.attachment = (f"screen attached ({words} words)" if self.pending
                                     else "screen: always" if self.always else "")

"""The screen's text before it is sent: read it, edit it, attach it or not."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, TextArea


class ScreenPreviewScreen(ModalScreen[str | None]):
    """Shows the text that will go to the model (private windows blanked, PII replaced); dismisses with the
    edited text, or None when cancelled. Nothing of the screen leaves the dialog unless the user attaches it.
    With `image` (the screen's image goes too, for a vision model) an emptied text still attaches."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "attach", "Attach")]

    def __init__(self, text: str, note: str, *, image: bool = False) -> None:
        super().__init__(classes="dialog")
        self._text, self._note, self._image = text, note, image

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box screen-preview-box"):
            yield Label("Screen text to attach (edit it freely)", classes="dialog-title")
            yield Label(self._note, id="screen-preview-note", markup=False)
            yield TextArea(self._text, id="screen-preview-text", soft_wrap=True)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Attach (Ctrl+S)", variant="primary", id="attach")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#screen-preview-text", TextArea).focus()

    @on(Button.Pressed, "#attach")
    def action_attach(self) -> None:
        text = self.query_one("#screen-preview-text", TextArea).text.strip()
        self.dismiss(text if text or self._image else None)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

"""The multi-line message input: Enter sends, Ctrl+J / Shift+Enter add a line, Up / Down on the
first / last line walk through what was sent this session.

Ctrl+J arrives as LF in every terminal, so it always works. Shift+Enter only exists where the
terminal reports modifiers on Enter (kitty keyboard protocol); elsewhere it is plain Enter. Alt+Enter
reaches Textual as plain Enter, so it is not offered.
"""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = frozenset({"ctrl+j", "shift+enter", "ctrl+enter"})


class PromptInput(TextArea):
    """A TextArea that submits on Enter and keeps a per-session input history."""

    class Submitted(Message):
        """The user pressed Enter with some text."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, tab_behavior="focus", show_line_numbers=False,
                         placeholder="Message (Enter send, Ctrl+J new line, Up history)")
        self.sent: list[str] = []
        self._history_index: int | None = None  # position while browsing; None = editing a draft
        self._draft = ""

    def remember(self, text: str) -> None:
        """Add a sent message to the session history (consecutive duplicates are kept once)."""
        if text and (not self.sent or self.sent[-1] != text):
            self.sent.append(text)
        self._history_index = None
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        key = event.key
        if key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text
            if text.strip():
                self.post_message(self.Submitted(text))
            return
        if key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            start, end = self.selection
            self._replace_via_keyboard("\n", start, end)
            return
        if key == "up" and self.cursor_location[0] == 0 and self._recall(-1):
            event.stop()
            event.prevent_default()
            return
        if key == "down" and self.cursor_location[0] == self.document.line_count - 1 and self._recall(+1):
            event.stop()
            event.prevent_default()
            return
        await super()._on_key(event)

    def _recall(self, step: int) -> bool:
        """Show the previous (-1) or next (+1) history entry; False when there is none to show."""
        if not self.sent:
            return False
        if self._history_index is None:
            if step > 0:
                return False
            self._draft = self.text
            index = len(self.sent) - 1
        else:
            index = self._history_index + step
            if index < 0:
                return True  # at the oldest entry: stay, but swallow the key
        if index >= len(self.sent):
            self._history_index = None
            self.text = self._draft
            self.move_cursor(self.document.end)
            return True
        self._history_index = index
        self.text = self.sent[index]
        if step < 0:
            self.move_cursor((0, len(self.document[0])))
        else:
            self.move_cursor(self.document.end)
        return True

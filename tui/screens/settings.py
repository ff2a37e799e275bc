"""Settings: system prompt, sampling, context and threads, saved with `edge_ai.config.set_values`.

Every field is validated (`edge_ai.config.coerce`) before anything is written, so a wrong value
shows the EdgeAIError message and changes nothing.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static, TextArea

from edge_ai import config as config_mod
from edge_ai.config import Config
from edge_ai.errors import EdgeAIError

FIELDS: tuple[str, ...] = (
    "chat.system_prompt",
    "sampling.temperature", "sampling.top_p", "sampling.top_k", "sampling.min_p",
    "sampling.repeat_penalty", "sampling.seed", "sampling.max_tokens", "sampling.stop",
    "model.context", "model.threads",
)
SOURCE = "the settings screen"


def field_id(key: str) -> str:
    return "setting-" + key.replace(".", "-")


def as_text(value: Any) -> str:
    """A setting as the user types it: lists (stop strings) comma-separated, as `config set` takes them."""
    return ",".join(value) if isinstance(value, list) else str(value)


class SettingsScreen(ModalScreen[dict[str, Any] | None]):
    """Dismisses with the changed settings (key -> stored value), or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, cfg: Config, *, conversation_has_turns: bool = False) -> None:
        super().__init__(classes="dialog")
        self.cfg = cfg
        self._error = ""
        self._ask_apply = conversation_has_turns

    @property
    def apply_to_current(self) -> bool:
        """Whether a new system prompt should also apply to the open conversation, which has turns
        (the user's choice; a conversation without turns always takes it)."""
        return self._ask_apply and self.query_one("#apply-system-prompt", Checkbox).value

    def compose(self) -> ComposeResult:
        settings = config_mod.settings()
        with Vertical(classes="dialog-box settings-box"):
            yield Label("Settings  (Ctrl+S save, Esc cancel)", classes="dialog-title")
            with VerticalScroll(id="settings-fields"):
                for key in FIELDS:
                    yield Label(f"{key} — {settings[key].metadata['help']}", classes="setting-label", markup=False)
                    value = self.cfg.get(key)
                    if key == "chat.system_prompt":
                        yield TextArea(value, id=field_id(key), soft_wrap=True, compact=True, classes="setting-text")
                        if self._ask_apply:
                            yield Checkbox("also use a changed system prompt in the open conversation",
                                           value=True, id="apply-system-prompt", compact=True)
                    else:
                        yield Input(as_text(value), id=field_id(key), compact=True, classes="setting-input")
            yield Static("", id="settings-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(f"#{field_id(FIELDS[0])}").focus()

    def raw_values(self) -> dict[str, str]:
        out = {}
        for key in FIELDS:
            widget = self.query_one(f"#{field_id(key)}")
            out[key] = widget.text if isinstance(widget, TextArea) else widget.value  # type: ignore[attr-defined]
        return out

    @property
    def error(self) -> str:
        return self._error

    def show_error(self, text: str) -> None:
        self._error = text
        self.query_one("#settings-error", Static).update(text)
        self.notify(text, title="Invalid setting", severity="error")

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        raw = self.raw_values()
        changed: dict[str, Any] = {}
        try:
            for key, text in raw.items():
                value = config_mod.coerce(key, text.strip() if key != "chat.system_prompt" else text, SOURCE)
                if value != self.cfg.get(key):
                    changed[key] = value
            if changed:  # one atomic write of the config file for all of them
                config_mod.set_values({key: as_text(value) for key, value in changed.items()})
        except EdgeAIError as exc:
            self.show_error(str(exc))
            return
        self.dismiss(changed)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

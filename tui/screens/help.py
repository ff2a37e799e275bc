"""The help screen: every key binding, built from `tui.keys` so it cannot drift from the real keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Markdown

from tui.keys import COMMANDS, INPUT_KEYS, OTHER_KEYS


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def help_markdown() -> str:
    lines = ["## Commands", "", "| Keys | Command | What it does |", "|---|---|---|"]
    for c in COMMANDS:
        lines.append(f"| {_cell(c.label or 'palette only')} | {_cell(c.title)} | {_cell(c.help)} |")
    lines += ["", "## Message input", "", "| Keys | What it does |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in INPUT_KEYS]
    lines += ["", "## Elsewhere", "", "| Keys | What it does |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in OTHER_KEYS]
    return "\n".join(lines) + "\n"


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q,question_mark", "close", "Close")]

    def __init__(self) -> None:
        super().__init__(classes="dialog")

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog-box help-box"):
            yield Label("edge-ai keys  (Esc to close)", classes="dialog-title")
            yield Markdown(help_markdown(), id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)

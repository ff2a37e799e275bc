"""Every command of the app in one table: its action, palette entry, keys and help text.

The chat screen's bindings, the command palette and the help screen are all built from
`COMMANDS`, so a key shown in help is always the key that works. Keys avoid what the prompt
input (a TextArea) already binds (Ctrl+A/E/W/D/U/K/X/C/V/Z/Y, F5-F7) and what terminals swallow.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Command:
    action: str
    """Name of the `action_*` method on the chat screen."""
    title: str
    """Command-palette title."""
    help: str
    keys: str = ""
    """Textual key names, comma-separated ("" = palette only)."""
    label: str = ""
    """The keys as a person would write them (help screen)."""
    footer: str = ""
    """Short footer text; "" keeps the binding out of the footer."""
    priority: bool = False


COMMANDS: tuple[Command, ...] = (
    Command("new_chat", "New chat", "Start a new conversation", "ctrl+n", "Ctrl+N", "New"),
    Command("stop", "Stop generating", "Stop the reply in progress; the partial reply is kept, marked stopped",
            "escape", "Esc", "Stop"),
    Command("retry", "Retry last reply", "Regenerate the last assistant reply", "ctrl+r", "Ctrl+R", "Retry"),
    Command("edit_last", "Edit last message",
            "Put your last message back in the input and delete it and its reply", "ctrl+l", "Ctrl+L"),
    Command("rename", "Rename conversation", "Give the current conversation a new title", "f2", "F2"),
    Command("delete", "Delete conversation", "Delete the current conversation (asks first)", "f8", "F8"),
    Command("export_markdown", "Export conversation to Markdown",
            "Write the conversation to a .md file (a .json path writes JSON)", "ctrl+s", "Ctrl+S"),
    Command("export_json", "Export conversation to JSON", "Write the conversation and its metrics to a .json file"),
    Command("search", "Search conversations",
            "Search titles and messages by words, and by meaning when an embedder is installed", "ctrl+f", "Ctrl+F"),
    Command("toggle_sidebar", "Toggle sidebar", "Show or hide the conversation list", "ctrl+b", "Ctrl+B"),
    Command("pick_model", "Pick model", "Switch to another registered model", "ctrl+o,f4", "Ctrl+O / F4", "Model"),
    Command("settings", "Settings", "System prompt, sampling, context and threads", "f3", "F3", "Settings"),
    Command("help", "Help", "Show every key binding", "f1,question_mark", "F1 / ? (outside the input)", "Help"),
    Command("toggle_theme", "Toggle light/dark theme", "Switch between light and dark (saved to tui.theme)",
            "ctrl+t", "Ctrl+T"),
    Command("toggle_voice", "Voice mode", "Talk with the assistant: it listens, answers aloud and stops when you "
            "cut in (F9 again turns it off)", "f9", "F9", "Voice"),
    Command("talk", "Talk (push-to-talk)", "With voice.push_to_talk on: start / stop being heard", "f10", "F10"),
    Command("attach_screen", "Attach the screen",
            "Read the screen (private windows blanked, PII replaced), review the text, attach it to your next "
            "message; /screen QUESTION reads it and sends the question with it", "f12", "F12", "Screen"),
    Command("toggle_always_screen", "Always attach the screen",
            "Attach the screen's text to every message you send (reviewed each time); again to stop"),
    Command("toggle_watch", "Screen watch on/off",
            "Opt-in: log what changes on screen (private windows blanked, PII redacted, owner-only file) for "
            "`edge-ai screen search`; the status bar shows it while on; again to stop"),
    Command("pause_watch", "Pause screen watch", "Pause or resume screen watch at once: nothing is captured "
            "while paused", "ctrl+g", "Ctrl+G"),
)

INPUT_KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "send the message"),
    ("Ctrl+J / Shift+Enter", "new line (Ctrl+J works in every terminal; Shift+Enter only where the terminal "
                             "reports it, e.g. kitty, WezTerm, foot, Ghostty)"),
    ("Up / Down on the first / last line", "previous / next message sent this session"),
    ("Tab / Shift+Tab", "move between the input, the sidebar and the search box"),
)

OTHER_KEYS: tuple[tuple[str, str], ...] = (
    ("Ctrl+P", "command palette (every command above)"),
    ("Delete (in the sidebar)", "delete the highlighted conversation"),
    ("Ctrl+Q", "quit"),
)


def bindings() -> list[Binding]:
    """The chat screen's bindings, from the table."""
    return [
        Binding(c.keys, c.action, c.footer or c.title, show=bool(c.footer), priority=c.priority)
        for c in COMMANDS if c.keys
    ]

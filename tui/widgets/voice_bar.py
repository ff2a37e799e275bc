"""Voice mode's two lines above the status bar: state, microphone level, the live words; the reply as spoken.

Line 1: `🎙 listening ▂▄▆█░░ │ … what the user is saying (partial transcript)` or the last turn's
latency breakdown when nobody speaks. Line 2: the reply being spoken, its heard part highlighted.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

METER_WIDTH = 8
METER_FLOOR_DB = -60.0  # the meter's bottom; speech on a laptop microphone peaks near -10 dBFS

STATE_ICONS = {"listening": "🎙", "user speaking": "🗣", "thinking": "…", "speaking": "🔊", "off": "🔇"}


def meter(db: float) -> str:
    """A small level bar for `db` (dBFS)."""
    filled = round(max(0.0, min(1.0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB)) * METER_WIDTH)
    return "█" * filled + "░" * (METER_WIDTH - filled)


class VoiceBar(Static):
    """Set its attributes; it redraws itself."""

    state: reactive[str] = reactive("off")
    level_db: reactive[float] = reactive(-100.0)
    partial: reactive[str] = reactive("")
    latency: reactive[str] = reactive("")
    reply: reactive[str] = reactive("")
    heard: reactive[int] = reactive(0)  # characters of `reply` the listener has heard
    push_to_talk: reactive[str] = reactive("")  # "" when off, else "talk key: F10 (on)" / "(off)"

    def render(self) -> Text:
        icon = STATE_ICONS.get(self.state, "")
        line = Text(f"{icon} {self.state:<13} {meter(self.level_db)}  ")
        if self.push_to_talk:
            line.append(f"[{self.push_to_talk}]  ", style="bold")
        if self.partial:
            line.append(f"… {self.partial}", style="italic")
        elif self.latency:
            line.append(self.latency, style="dim")
        line.append("\n")
        if self.reply:
            line.append(self.reply[: self.heard], style="bold")
            line.append(self.reply[self.heard:], style="dim")
        return line

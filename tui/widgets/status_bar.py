"""One line at the bottom: model, context use, last reply's speed, process memory, screen, watch, state."""

from __future__ import annotations

import psutil
from textual.reactive import reactive
from textual.widgets import Static


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


_SEPARATOR = "  │  "


class StatusBar(Static):
    """Set its attributes; it redraws itself. Memory is sampled every two seconds."""

    model: reactive[str] = reactive("")
    state: reactive[str] = reactive("")
    context_used: reactive[int] = reactive(0)
    context_size: reactive[int] = reactive(0)
    ttft_s: reactive[float | None] = reactive(None)
    tok_s: reactive[float | None] = reactive(None)
    rss: reactive[int] = reactive(0)
    attachment: reactive[str] = reactive("")  # the screen attachment: "" none, else what goes with the next message
    watch: reactive[str] = reactive("")  # screen watch mode: "" off, else watching / paused

    def on_mount(self) -> None:
        self._process = psutil.Process()
        self._sample_memory()
        self.set_interval(2.0, self._sample_memory)

    def _sample_memory(self) -> None:
        try:
            self.rss = self._process.memory_info().rss
        except psutil.Error:
            pass

    def render(self) -> str:
        """Fit the line to the bar: drop memory, then TTFT, then context use, never model, screen, watch or state."""
        model = f"model: {self.model or '-'}"
        optional: list[tuple[int, str]] = []  # (drop order: lower goes first, text)
        if self.context_size:
            optional.append((2, f"ctx {self.context_used}/{self.context_size}"))
        if self.ttft_s is not None:
            optional.append((1, f"TTFT {self.ttft_s:.2f} s"))
        if self.tok_s is not None:
            optional.append((3, f"{self.tok_s:.1f} tok/s"))
        if self.rss:
            optional.append((0, f"RSS {_mib(self.rss)}"))
        width = self.content_size.width or 10_000
        while True:
            parts = [model, *(text for _, text in optional)]
            parts += [text for text in (self.attachment, self.watch) if text]
            if self.state:
                parts.append(self.state)
            line = _SEPARATOR.join(parts)
            if len(line) <= width or not optional:
                return line
            optional.remove(min(optional))

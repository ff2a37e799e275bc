"""The message list: one `MessageView` per message, assistant replies streamed as Markdown."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Markdown, Static
from textual.widgets.markdown import MarkdownStream

ROLE_TITLES = {"user": "You", "assistant": "Assistant", "system": "System"}


def describe_metrics(metrics: dict[str, Any] | None) -> str:
    """The line under a finished reply: model, tokens, speed, TTFT, and whether it was stopped; for a spoken
    reply, that it was spoken (or cut off, showing what the listener heard) and its turn's latency."""
    if not metrics:
        return ""
    if "voice_latency" in metrics:
        heard = "⏹ interrupted · heard what is shown" if metrics.get("finish_reason") == "cancelled" else "spoken"
        return " · ".join(part for part in (heard, metrics["voice_latency"]) if part)
    parts = []
    if metrics.get("model"):
        parts.append(str(metrics["model"]))
    if "generated_tokens" in metrics:
        parts.append(f"{metrics['generated_tokens']} tok")
    if metrics.get("decode_tok_s"):
        parts.append(f"{metrics['decode_tok_s']:.1f} tok/s")
    if metrics.get("ttft_s"):
        parts.append(f"TTFT {metrics['ttft_s']:.2f} s")
    reason = metrics.get("finish_reason")
    if reason == "cancelled":
        parts.append("⏹ stopped")
    elif reason == "length":
        parts.append("cut at max tokens")
    if metrics.get("dropped_messages"):
        parts.append(f"{metrics['dropped_messages']} old messages left out of context")
    return " · ".join(parts)


def _stopped(metrics: dict[str, Any] | None) -> bool:
    return bool(metrics and metrics.get("finish_reason") == "cancelled")


class MessageView(Vertical):
    """One message: a role line, the Markdown body and a footer (metrics, stopped marker).

    The body and footer are built with the view, not in `compose`: a view is in the log (and found by
    queries) before Textual composes it, and reading or updating it then must not fail."""

    def __init__(self, role: str, content: str = "", *, message_id: int | None = None,
                 metrics: dict[str, Any] | None = None, footer: str | None = None) -> None:
        super().__init__(classes=f"message {role}")
        self.role = role
        self.message_id = message_id
        self.metrics = metrics
        self._content = content
        self.body = Markdown(content, classes="body")
        self._footer = describe_metrics(metrics) if footer is None else footer
        self._footer_view = Static(self._footer, classes="footer", markup=False)
        self._footer_view.display = bool(self._footer)
        self.set_class(_stopped(metrics), "stopped")

    def compose(self) -> ComposeResult:
        yield Label(ROLE_TITLES.get(self.role, self.role), classes="role")
        yield self.body
        yield self._footer_view

    @property
    def text(self) -> str:
        """The Markdown source shown (for a streaming reply: everything received so far).

        Markdown keeps its text aside until it is mounted; until then the view was made with it."""
        return self.body.source if self.body.is_mounted else self._content

    def start_stream(self) -> MarkdownStream:
        """A stream appending fragments to the body without re-rendering what is already there."""
        return Markdown.get_stream(self.body)

    def finish(self, message_id: int | None, metrics: dict[str, Any] | None) -> None:
        """The reply ended: remember its id and show its metrics (and the stopped marker)."""
        self.message_id = message_id
        self.metrics = metrics
        self.set_footer(describe_metrics(metrics))
        self.set_class(_stopped(metrics), "stopped")

    def set_footer(self, text: str) -> None:
        self._footer = text
        self._footer_view.update(text)
        self._footer_view.display = bool(text)

    @property
    def footer(self) -> str:
        return self._footer


class ErrorView(Static):
    """An error shown in the chat (not saved in the history)."""

    def __init__(self, text: str) -> None:
        super().__init__(f"error: {text}", classes="error-message", markup=False)
        self.text = text


class ChatLog(VerticalScroll):
    """The scrolling list of messages; stays at the bottom while a reply streams in."""

    async def add(self, *views: Static | MessageView) -> None:
        await self.mount_all(views)
        self.anchor()

    async def clear(self) -> None:
        await self.remove_children()

    def views(self) -> list[MessageView]:
        return list(self.query_children(MessageView))

"""The chat screen: conversation sidebar, message list, input, status bar.

A reply is a job on the model's own thread (`runtime.llm.scheduler`, the app's `engines`),
submitted before its view is mounted, so the engine starts at once and tokens that arrive during
the mount wait in the job's event stream (`runtime.llm.stream`). On the model's thread the job
also stores the reply as it grows (inserted with the first token, rewritten every
`SAVE_INTERVAL_S`, finished with its metrics), so a crash, a quit or a conversation switch
mid-reply keeps what was written. On the event loop `_show_reply` reads the events and draws
them into the reply's Markdown through a `MarkdownStream` (each token appends instead of
re-rendering the message), at most `FRAME_RATE` times a second: on a 2-core laptop every frame
the UI draws takes CPU from llama.cpp's threads.
Every reply belongs to a `ReplyJob`; once the screen lets go of one (new chat, other
conversation) it stops drawing it, while the model's thread still saves it where it belongs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.widgets.markdown import MarkdownStream

from edge_ai.errors import EdgeAIError, StoppedError
from edge_ai.fileio import atomic_write_text
from edge_ai.history import Conversation, HistoryStore
from edge_ai.history import Message as StoredMessage
from runtime.llm.events import DoneEvent, Event, SamplingParams, TokenEvent
from runtime.llm.interface import ChatEngine
from runtime.llm.scheduler import Call
from runtime.llm.stream import EventStream, stream
from tui import keys
from tui.frame_pace import FramePace
from tui.screen_context import ScreenContext, screen_command
from tui.screen_watch import ScreenWatch, WatchEvent
from tui.screens.dialogs import ConfirmScreen, PromptScreen
from tui.screens.help import HelpScreen
from tui.screens.model_picker import ModelPickerScreen
from tui.screens.settings import SettingsScreen
from tui.voice_mode import VoiceEvent, VoiceMode
from tui.widgets.chat_log import ChatLog, ErrorView, MessageView
from tui.widgets.prompt_input import PromptInput
from tui.widgets.sidebar import Sidebar
from tui.widgets.status_bar import StatusBar
from tui.widgets.voice_bar import VoiceBar

if TYPE_CHECKING:
    import numpy as np

    from tui.app import EdgeAIApp

log = logging.getLogger(__name__)

TITLE_LENGTH = 48
STOP_WAIT = 2.0  # seconds to wait for a stopped reply's end (it comes within a token)
SAVE_INTERVAL_S = 0.5  # how often a growing reply is rewritten in the history


def title_from(text: str) -> str:
    """A conversation title from its first message: the first line, shortened."""
    line = " ".join(text.strip().split())
    return line if len(line) <= TITLE_LENGTH else line[:TITLE_LENGTH - 1].rstrip() + "…"


def slugify(title: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()
    return slug[:60] or "conversation"


class SavedReply:
    """A reply's row in the history, kept up to date from the model's thread (the store is thread-safe).

    The row is inserted with the first text and rewritten at most every `SAVE_INTERVAL_S`, so a
    crash loses at most that much of a reply; `finish` stores the final text with the metrics.
    """

    def __init__(self, history: HistoryStore, conversation_id: int) -> None:
        self._history = history
        self._conversation_id = conversation_id
        self._stored: StoredMessage | None = None
        self._text = ""
        self._saved_at = 0.0

    @property
    def stored(self) -> StoredMessage | None:
        """The reply's row as last saved (None before the first token)."""
        return self._stored

    def grow(self, text: str) -> None:
        self._text += text
        if self._stored is None or time.monotonic() - self._saved_at >= SAVE_INTERVAL_S:
            self._save(self._text)

    def _save(self, text: str, metrics: dict[str, Any] | None = None) -> StoredMessage:
        if self._stored is None:
            self._stored = self._history.add_message(self._conversation_id, "assistant", text, metrics)
        elif text != self._stored.content or metrics is not None:
            self._stored = self._history.update_message(self._stored.id, text, metrics)
        self._saved_at = time.monotonic()
        return self._stored

    def finish(self, text: str, metrics: dict[str, Any]) -> StoredMessage:
        """The reply ended: store its final text with its metrics."""
        return self._save(text, metrics)

    def keep(self) -> StoredMessage | None:
        """The reply failed: store what was written so far, if anything and if the store still takes it."""
        if not self._text:
            return self._stored
        try:
            return self._save(self._text)
        except EdgeAIError as exc:
            log.warning("could not keep the text of a failed reply: %s", exc)
            return self._stored


@dataclass
class ReplyJob:
    id: int
    conversation_id: int
    messages: list[dict[str, Any]]
    sampling: SamplingParams
    saved: SavedReply
    events: EventStream | None = None
    shown: asyncio.Event = field(default_factory=asyncio.Event)  # its end drawn and stored (or let go of)

    def call(self) -> Call:
        """The job as the model's thread runs it: the engine's reply, saved as it streams."""

        def reply(engine: ChatEngine, stop: threading.Event) -> Iterator[Event]:
            try:
                for event in engine.chat(self.messages, self.sampling, stop=stop):
                    if isinstance(event, TokenEvent):
                        self.saved.grow(event.text)
                    else:
                        metrics: dict[str, Any] = event.metrics.as_dict()
                        metrics.update(finish_reason=event.reason, model=engine.name)
                        self.saved.finish(event.text, metrics)
                    yield event
            except Exception:
                self.saved.keep()
                raise

        return reply


class ChatScreen(Screen[None]):
    BINDINGS = keys.bindings()

    def __init__(self) -> None:
        super().__init__(id="chat")
        self.conversation: Conversation | None = None
        self.messages: list[StoredMessage] = []
        # a conversation titled after a spoken turn taken back: titled after the next user message instead
        self._untitled: int | None = None
        self.images: dict[int, np.ndarray] = {}  # screen images sent to a vision model, by message id
        self.job: ReplyJob | None = None
        self.last_done: DoneEvent | None = None
        self._job_ids = itertools.count(1)
        self._stream: MarkdownStream | None = None
        self._reply_view: MessageView | None = None
        self.voice = VoiceMode(self)
        self.screen_context = ScreenContext(self)
        self.screen_watch = ScreenWatch(self)

    @property
    def edge_app(self) -> EdgeAIApp:
        return self.app  # type: ignore[return-value]

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(icon="")
        with Horizontal(id="body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="main"):
                yield ChatLog(id="chat-log")
                yield PromptInput(id="prompt")
        voice_bar = VoiceBar(id="voice-bar")
        voice_bar.display = False
        yield voice_bar
        yield StatusBar(id="status")
        yield Footer()

    @property
    def chat_log(self) -> ChatLog:
        return self.query_one("#chat-log", ChatLog)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one("#prompt", PromptInput)

    @property
    def sidebar(self) -> Sidebar:
        return self.query_one("#sidebar", Sidebar)

    @property
    def status(self) -> StatusBar:
        return self.query_one("#status", StatusBar)

    @property
    def generating(self) -> bool:
        return self.job is not None

    async def on_mount(self) -> None:
        self.edge_app.update_status(self)
        conversations = self.edge_app.history.list_conversations()
        if conversations:
            await self.open_conversation(conversations[0].id)
            self.adopt_system_prompt(announce=bool(self.messages))
        else:
            await self.refresh_sidebar()
        self.prompt.focus()

    def adopt_system_prompt(self, announce: bool) -> None:
        """Give the current conversation the configured system prompt (from -s, the config or the
        settings screen): its next replies use it; `announce` says so when it already has turns."""
        conversation, wanted = self.conversation, self.edge_app.cfg.chat.system_prompt
        if conversation is None or conversation.system_prompt == wanted:
            return
        try:
            self.conversation = self.edge_app.history.set_system_prompt(conversation.id, wanted)
        except EdgeAIError as exc:
            self.notify(str(exc), title="History", severity="error")
            return
        if announce:
            self.notify("This conversation now uses the configured system prompt.", title="System prompt")

    # -- engine state (set by the app) ---------------------------------------------------------

    def show_engine(self, name: str, context_used: int, context_size: int, state: str = "ready") -> None:
        status = self.status
        status.model, status.context_used, status.context_size = name, context_used, context_size
        status.state = state if self.job is None else "generating…"

    # -- sidebar -------------------------------------------------------------------------------

    async def refresh_sidebar(self) -> None:
        history = self.edge_app.history
        query = self.sidebar.query_text.strip()
        try:
            if query:
                rows = [(c.id, c.title, snippet) for c, snippet in self.edge_app.history_search.search(query)]
            else:
                rows = [(c.id, c.title, "") for c in history.list_conversations()]
        except EdgeAIError as exc:
            self.notify(str(exc), title="History", severity="error")
            return
        current = self.conversation.id if self.conversation else None
        await self.sidebar.show(rows, current, searching=bool(query))

    async def on_sidebar_search_changed(self, _: Sidebar.SearchChanged) -> None:
        await self.refresh_sidebar()

    async def on_sidebar_selected(self, event: Sidebar.Selected) -> None:
        if self.conversation is None or event.conversation_id != self.conversation.id:
            await self.open_conversation(event.conversation_id)
        self.prompt.focus()

    def on_sidebar_delete_requested(self, event: Sidebar.DeleteRequested) -> None:
        self._confirm_delete(event.conversation_id)

    async def open_conversation(self, conversation_id: int) -> None:
        """Show a stored conversation (stopping, but still saving, a reply in progress)."""
        history = self.edge_app.history
        try:
            conversation = history.get_conversation(conversation_id)
            messages = history.messages(conversation_id)
        except EdgeAIError as exc:
            self.notify(str(exc), title="History", severity="error")
            await self.refresh_sidebar()
            return
        await self._let_go_of_reply()
        await self.voice.cut_off()
        self.conversation, self.messages, self.images = conversation, messages, {}
        await self.voice.start_over()
        await self.chat_log.clear()
        await self.chat_log.add(*[MessageView(m.role, m.content, message_id=m.id, metrics=m.metrics)
                                  for m in messages if m.role != "system"])
        self.sub_title = conversation.title
        await self.refresh_sidebar()

    # -- sending and streaming -----------------------------------------------------------------

    def store_user_message(self, text: str) -> StoredMessage | None:
        """Store a message of the user's (typed or spoken), starting a conversation if none is open."""
        history = self.edge_app.history
        try:
            if self.conversation is None:
                self.conversation = history.create_conversation(
                    title_from(text), model=self.edge_app.model_name, system_prompt=self.edge_app.cfg.chat.system_prompt)
                self.sub_title = self.conversation.title
            elif self._untitled == self.conversation.id:
                self.conversation = history.rename(self.conversation.id, title_from(text))
                self.sub_title, self._untitled = self.conversation.title, None
            stored = history.add_message(self.conversation.id, "user", text)
        except EdgeAIError as exc:
            self.notify(str(exc), title="History", severity="error")
            return None
        self.messages.append(stored)
        return stored

    async def take_back_from(self, message_id: int) -> None:
        """Forget a message and all after it, stored and shown: a spoken turn that the user went on with."""
        index = next((i for i, message in enumerate(self.messages) if message.id == message_id), None)
        if self.conversation is None or index is None:
            return
        try:
            self.edge_app.history.delete_messages_from(self.conversation.id, message_id)
        except EdgeAIError as exc:
            self.notify(str(exc), title="History", severity="error")
            return
        taken, self.messages = self.messages[index], self.messages[:index]
        if self.conversation.title == title_from(taken.content) and all(m.role != "user" for m in self.messages):
            self._untitled = self.conversation.id  # else the sidebar keeps a fragment ("Write the numbers 1, 2.")
        await self._remove_views_from(message_id)

    def store_assistant_message(self, text: str, metrics: dict[str, Any]) -> StoredMessage | None:
        """Store a reply that did not come through `start_reply` (a spoken one)."""
        if self.conversation is None:
            return None
        try:
            stored = self.edge_app.history.add_message(self.conversation.id, "assistant", text, metrics)
        except EdgeAIError as exc:
            self.notify(str(exc), title="History", severity="error")
            return None
        self.messages.append(stored)
        return stored

    async def on_voice_event(self, message: VoiceEvent) -> None:
        await self.voice.handle(message.event)

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        if self._busy():
            return
        text = event.text.strip()
        question = screen_command(text)
        if question is not None or (self.screen_context.always and self.screen_context.pending is None):
            self.prompt.remember(event.text)
            self.prompt.clear()
            self.screen_context.attach(text if question is None else question or None)
            return
        message, image = self.screen_context.take(text)
        if await self.send_message(message, image=image):
            self.prompt.remember(event.text)
            self.prompt.clear()

    async def send_message(self, text: str, *, image: np.ndarray | None = None) -> bool:
        """Store the user's message and start the reply to it (with the screen's `image` for a vision
        model: kept in memory, not in the history); False when it could not be stored."""
        if self._busy():
            return False
        await self.voice.cut_off()  # a spoken reply stops, what was heard of it stored before this message
        stored = self.store_user_message(text)
        if stored is None:
            return False
        footer = ""
        if image is not None:
            self.images[stored.id] = image
            footer = f"with the screen's image ({image.shape[1]}x{image.shape[0]})"
        await self.start_reply(MessageView("user", text, message_id=stored.id, footer=footer))
        await self.refresh_sidebar()
        return True

    def engine_messages(self) -> list[dict[str, Any]]:
        """The conversation as the engine takes it (empty stopped replies left out, images kept)."""
        out: list[dict[str, Any]] = []
        if self.conversation is not None and self.conversation.system_prompt:
            out.append({"role": "system", "content": self.conversation.system_prompt})
        for m in self.messages:
            if m.role != "system" and (m.content or m.role == "user"):
                out.append({"role": m.role, "content": m.content})
                if m.id in self.images:
                    out[-1]["image"] = self.images[m.id]
        return out

    async def start_reply(self, *views_before: MessageView) -> None:
        """Start the reply on the model's thread, then mount `views_before` and the reply's view.

        The job is submitted first so the engine works while the views mount; its first tokens
        wait in the job's stream (a reply may even end before the mount does).
        """
        assert self.conversation is not None
        history = self.edge_app.history
        sampling = SamplingParams.from_settings(self.edge_app.cfg.sampling)
        job = ReplyJob(next(self._job_ids), self.conversation.id, self.engine_messages(), sampling,
                       SavedReply(history, self.conversation.id))
        try:
            job.events = stream(self.edge_app.engines, job.call())
        except EdgeAIError as exc:  # the app is closing, or a let-go reply still fills the queue
            await self.chat_log.add(*views_before)
            await self.show_error(str(exc))
            return
        self.job = job  # busy from now: a second Enter during the mount is refused
        view = MessageView("assistant", footer="generating…")
        await self.chat_log.add(*views_before, view)
        if self.job is not job:  # let go of (new chat, other conversation) during the mount
            return
        self._reply_view, self._stream = view, view.start_stream()
        view.add_class("streaming")
        self.status.state = "generating…"
        self._show_reply(job)

    @work(group="reply", exit_on_error=False)
    async def _show_reply(self, job: ReplyJob) -> None:
        try:
            await self._draw_reply(job)
        finally:
            job.shown.set()

    async def _draw_reply(self, job: ReplyJob) -> None:
        """Draw the job's events as they come, at most FRAME_RATE times a second, then its end."""
        assert job.events is not None
        pending, pace = "", FramePace()
        try:
            async for event in job.events:
                if not self._is_current(job.id):
                    return  # let go of: the model's thread still saves it
                if isinstance(event, DoneEvent):
                    await self._show_text(pending)
                    await self._reply_done(job, event)
                    return
                pending += event.text
                if pace.due():
                    await self._show_text(pending)
                    pending = ""
        except StoppedError:
            pass  # stopped before the model started
        except Exception as exc:
            if not isinstance(exc, EdgeAIError):  # keep the app alive; the traceback goes to the log file
                log.exception("reply failed")
            error = str(exc) if isinstance(exc, EdgeAIError) else \
                f"unexpected {type(exc).__name__}: {exc} (see the log file)"
            if self._is_current(job.id):
                await self._reply_failed(job, error)
            else:
                log.warning("a reply the screen no longer shows failed: %s", error)
            return
        if self._is_current(job.id):
            await self._reply_done(job, None)

    async def _show_text(self, text: str) -> None:
        if text and self._stream is not None:
            await self._stream.write(text)

    def _is_current(self, job_id: int) -> bool:
        return self.job is not None and self.job.id == job_id

    @staticmethod
    def _cancel(job: ReplyJob) -> None:
        if job.events is not None:
            job.events.cancel()

    async def _end_stream(self) -> MessageView | None:
        stream_, view = self._stream, self._reply_view
        self._stream = self._reply_view = None
        self.job = None
        if stream_ is not None:
            await stream_.stop()
        if view is not None:
            view.remove_class("streaming")
        return view

    async def _reply_done(self, job: ReplyJob, event: DoneEvent | None) -> None:
        """The reply ended (`event` is None if it was stopped before it started) and is saved."""
        view = await self._end_stream()
        stored = job.saved.stored
        if stored is not None and event is not None:
            self.messages.append(stored)
            self.last_done = event
            self.voice.follow()
            if view is not None:
                view.finish(stored.id, stored.metrics)
            metrics = event.metrics
            status = self.status
            status.ttft_s, status.tok_s = metrics.ttft_s, metrics.decode_tok_s
            status.context_used, status.context_size = metrics.context_used, metrics.context_size
        elif view is not None:  # stopped before the model wrote anything
            await view.remove()
        self.status.state = "ready"
        await self.refresh_sidebar()

    async def _reply_failed(self, job: ReplyJob, error: str) -> None:
        """The reply failed; what it had written so far was kept by the model's thread."""
        view = await self._end_stream()
        stored = job.saved.stored
        if stored is not None:
            self.messages.append(stored)
        if view is not None:
            if stored is not None or view.text:
                view.message_id = stored.id if stored is not None else None
                view.set_footer("failed")
            else:
                await view.remove()
        self.status.state = "ready" if self.edge_app.engines.engine is not None else "no model"
        await self.show_error(error)

    async def show_error(self, text: str) -> None:
        await self.chat_log.add(ErrorView(text))
        self.notify(text, title="Error", severity="error")

    async def stop_typed_reply(self) -> None:
        """The user turned to speaking (a spoken turn was committed, or they said only "stop"): the reply being
        written stops as Esc stops it, and is stored and shown before the spoken question, as a typed message
        stops a spoken reply. Waits for its end to be drawn (milliseconds; at most STOP_WAIT)."""
        job = self.job
        if job is None:
            return
        self.action_stop()
        try:
            await asyncio.wait_for(job.shown.wait(), STOP_WAIT)
        except asyncio.TimeoutError:
            log.warning("a typed reply did not end within %.0f s of being stopped", STOP_WAIT)

    async def _let_go_of_reply(self) -> None:
        """Stop the reply in progress and stop showing it; its worker still saves it."""
        if self.job is not None:
            self._cancel(self.job)
            await self._end_stream()
            self.status.state = "ready"

    async def _remove_views_from(self, message_id: int | None) -> None:
        """Remove the view of `message_id` and everything after it (None: trailing error views)."""
        children = list(self.chat_log.children)
        start = len(children)
        for i, child in enumerate(children):
            if isinstance(child, MessageView) and child.message_id == message_id and message_id is not None:
                start = i
                break
        if message_id is None:
            while start > 0 and isinstance(children[start - 1], ErrorView):
                start -= 1
        if children[start:]:
            await self.chat_log.remove_children(children[start:])

    # -- actions (bound in tui.keys) -----------------------------------------------------------

    def action_stop(self) -> None:
        if self.job is None:
            return
        self._cancel(self.job)
        self.status.state = "stopping…"

    async def action_new_chat(self) -> None:
        await self._let_go_of_reply()
        await self.voice.cut_off()
        self.conversation, self.messages, self.images = None, [], {}
        await self.voice.start_over()
        self.sub_title = ""
        await self.chat_log.clear()
        await self.refresh_sidebar()
        self.prompt.focus()

    def _busy(self) -> bool:
        if self.generating:
            self.notify("A reply is still being written; press Esc to stop it first.", severity="warning")
        return self.generating

    async def action_retry(self) -> None:
        if self._busy():
            return
        if self.conversation is None or not self.messages:
            self.notify("Nothing to retry yet.", severity="warning")
            return
        last = self.messages[-1]
        try:
            if last.role == "assistant":
                self.edge_app.history.delete_messages_from(self.conversation.id, last.id)
                self.messages.pop()
                await self._remove_views_from(last.id)
        except EdgeAIError as exc:
            await self.show_error(str(exc))
            return
        await self._remove_views_from(None)
        if not self.messages or self.messages[-1].role != "user":
            self.notify("There is no message of yours to answer.", severity="warning")
            return
        await self.start_reply()

    async def action_edit_last(self) -> None:
        if self._busy():
            return
        index = next((i for i in range(len(self.messages) - 1, -1, -1) if self.messages[i].role == "user"), None)
        if self.conversation is None or index is None:
            self.notify("No message of yours to edit.", severity="warning")
            return
        message = self.messages[index]
        try:
            self.edge_app.history.delete_messages_from(self.conversation.id, message.id)
        except EdgeAIError as exc:
            await self.show_error(str(exc))
            return
        self.messages = self.messages[:index]
        await self._remove_views_from(message.id)
        await self._remove_views_from(None)
        self.prompt.text = message.content
        self.prompt.move_cursor(self.prompt.document.end)
        self.prompt.focus()

    def _need_conversation(self) -> Conversation | None:
        if self.conversation is None:
            self.notify("Start or open a conversation first.", severity="warning")
        return self.conversation

    def action_rename(self) -> None:
        conversation = self._need_conversation()
        if conversation is None:
            return

        async def renamed(title: str | None) -> None:
            if not title:
                return
            try:
                self.conversation = self.edge_app.history.rename(conversation.id, title)
            except EdgeAIError as exc:
                self.notify(str(exc), severity="error")
                return
            self.sub_title = title
            await self.refresh_sidebar()

        self.app.push_screen(PromptScreen("Rename conversation", conversation.title, ok="Rename"), renamed)

    def action_delete(self) -> None:
        conversation = self._need_conversation()
        if conversation is not None:
            self._confirm_delete(conversation.id)

    def _confirm_delete(self, conversation_id: int) -> None:
        try:
            title = self.edge_app.history.get_conversation(conversation_id).title
        except EdgeAIError as exc:
            self.notify(str(exc), severity="error")
            return

        async def answered(yes: bool | None) -> None:
            if yes:
                await self.delete_conversation(conversation_id)

        self.app.push_screen(ConfirmScreen(f"Delete “{title}” and all its messages?", yes="Delete"), answered)

    async def delete_conversation(self, conversation_id: int) -> None:
        if self.conversation is not None and self.conversation.id == conversation_id:
            await self.action_new_chat()
        try:
            self.edge_app.history.delete(conversation_id)
        except EdgeAIError as exc:
            self.notify(str(exc), severity="error")
        await self.refresh_sidebar()

    def action_export_markdown(self) -> None:
        self._ask_export(".md")

    def action_export_json(self) -> None:
        self._ask_export(".json")

    def _ask_export(self, suffix: str) -> None:
        conversation = self._need_conversation()
        if conversation is None:
            return

        def chosen(path: str | None) -> None:
            if path:
                self.export(path, suffix)

        self.app.push_screen(PromptScreen("Export to (a .json path writes JSON, any other Markdown)",
                                          slugify(conversation.title) + suffix, ok="Export"), chosen)

    def export(self, raw_path: str, suffix: str = ".md") -> Path | None:
        """Write the current conversation to `raw_path` (relative to the current directory).

        A .json file gets JSON, any other Markdown; a directory gets a file named after the
        conversation with `suffix` (the format of the export command that asked).
        """
        conversation = self.conversation
        if conversation is None:
            return None
        path = Path(raw_path).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if path.is_dir():
            path = path / (slugify(conversation.title) + suffix)
        history = self.edge_app.history
        try:
            is_json = path.suffix.lower() == ".json"
            text = history.export_json(conversation.id) if is_json else history.export_markdown(conversation.id)
            atomic_write_text(path, text)
        except EdgeAIError as exc:
            self.notify(str(exc), title="Export failed", severity="error")
            return None
        self.notify(f"Exported to {path}", title="Export")
        return path

    def action_search(self) -> None:
        self.sidebar.display = True
        self.sidebar.search_box.focus()

    def action_toggle_sidebar(self) -> None:
        self.sidebar.display = not self.sidebar.display
        if not self.sidebar.display:
            self.prompt.focus()

    def action_pick_model(self) -> None:
        def picked(name: str | None) -> None:
            if name:
                self.edge_app.switch_model(name)

        self.app.push_screen(ModelPickerScreen(self.edge_app.model_name), picked)

    def action_settings(self) -> None:
        has_turns = bool(self.messages)
        screen = SettingsScreen(self.edge_app.cfg, conversation_has_turns=has_turns)

        def saved(changed: dict[str, Any] | None) -> None:
            if changed is None:
                return
            self.edge_app.apply_settings(changed)
            if "chat.system_prompt" not in changed or self.conversation is None:
                return
            if not has_turns or screen.apply_to_current:
                self.adopt_system_prompt(announce=False)
            else:
                self.notify("The current conversation keeps its system prompt; new ones use the new prompt.",
                            title="System prompt")

        self.app.push_screen(screen, saved)

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.edge_app.toggle_theme()

    def action_toggle_voice(self) -> None:
        self.voice.toggle()

    def action_talk(self) -> None:
        self.voice.talk()

    def action_attach_screen(self) -> None:
        self.screen_context.attach()

    def action_toggle_always_screen(self) -> None:
        self.screen_context.toggle_always()

    def action_toggle_watch(self) -> None:
        self.screen_watch.toggle()

    def action_pause_watch(self) -> None:
        self.screen_watch.toggle_pause()

    def on_watch_event(self, event: WatchEvent) -> None:
        self.screen_watch.handle(event)

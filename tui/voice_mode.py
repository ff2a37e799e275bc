"""Voice mode in the chat screen: the spoken conversation shown and stored like a typed one.

The voice session (`runtime.audio.session`) runs on its own threads and on the app's model
scheduler; its events are posted to the screen as messages and drawn here: the user's finished
turn and the assistant's reply become messages of the current conversation (stored in the
history as they end), the voice bar shows the state, the microphone level, the live partial
transcript, the reply with its spoken part highlighted, and the last turn's latency breakdown.
An interrupted reply is stored as what the listener heard, marked interrupted: cut off by the user's voice,
by a typed message (stored after it) or by leaving the conversation (Ctrl+N, another one opened from the
sidebar), after which the spoken replies follow on from the conversation shown. The other way round, a
spoken turn stops a typed reply being written (stored as stopped, before the spoken question). An utterance
that only asks to stop ("Wait, stop please.") gets no answer and is not stored: the voice bar shows it, and
a typed reply being written stops as at Esc.

The reply is drawn as typed replies are: appended through a `MarkdownStream`, at most `FramePace`
frames a second, not re-rendered at every token. Re-rendering it at every token cost the UI thread
521 ms of CPU (and the GIL) over an 80-token reply, appending 54 ms: CPU taken from the threads that
transcribe, synthesise and play on a 2-core laptop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from textual.message import Message
from textual.timer import Timer
from textual.widgets.markdown import MarkdownStream

from edge_ai.errors import EdgeAIError
from runtime.audio import events as ev
from tui.frame_pace import FRAME_RATE, FramePace
from tui.widgets.chat_log import MessageView
from tui.widgets.voice_bar import VoiceBar

if TYPE_CHECKING:
    from runtime.audio.selftest import AudioCheck
    from runtime.audio.session import VoiceSession
    from tui.screens.chat import ChatScreen

log = logging.getLogger(__name__)

CUT_OFF_WAIT = 2.0  # seconds to wait for the voice controller to stop a reply (it answers in milliseconds)


class VoiceEvent(Message):
    """A voice pipeline event, posted from its threads to the chat screen."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


def describe_latency(event: ev.TurnLatency) -> str:
    return (f"end of speech → transcript {event.transcript:.2f} s → first token {event.first_token:.2f} s → "
            f"first audio {event.first_audio:.2f} s")


class VoiceMode:
    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.session: VoiceSession | None = None
        self.opening = False
        self._reply_view: MessageView | None = None
        self._reply_stream: MarkdownStream | None = None
        self._reply_turn = -1
        self._stale_through = 0  # events of turns up to this one belong to a conversation no longer shown
        self._reply_text = ""  # the reply so far
        self._reply_shown = ""  # the part of it drawn
        self._pace = FramePace()
        self._draw_timer: Timer | None = None  # draws what arrived after the last frame, if nothing else does
        self._latency = ""
        self._said: tuple[int, int] | None = None  # the last spoken turn shown: (its number, its stored message id)

    @property
    def on(self) -> bool:
        return self.session is not None

    @property
    def bar(self) -> VoiceBar:
        return self.screen.query_one("#voice-bar", VoiceBar)

    def toggle(self) -> None:
        if self.opening:
            return
        if self.session is not None:
            self.screen.run_worker(self.session.close, thread=True, group="voice", exit_on_error=False)
            self.session = None
            self.bar.display = False
            self.bar.state = "off"
            self.screen.notify("Voice mode off.", title="Voice")
            return
        self.opening = True
        self.bar.display = True
        self.bar.state = "starting…"
        self.screen.run_worker(self._open, thread=True, group="voice", exit_on_error=False)

    def _open(self) -> None:
        """In a thread worker: loading Whisper and opening the devices takes a second or two (the first time,
        the audio check ~12 s more)."""
        from runtime.audio.session import VoiceSession, first_time_check

        app = self.screen.edge_app
        history = self._history()
        try:
            check = first_time_check(app.cfg, progress=lambda message: app.call_from_thread(self._checking, message))
            if check is not None:
                app.call_from_thread(self._checked, check)
            session = VoiceSession.open(app.cfg, app.engines, self._post, history=history)
            session.start()
            app.call_from_thread(self._starting_microphone)
            live = session.wait_for_microphone()
        except EdgeAIError as exc:
            app.call_from_thread(self._failed, str(exc))
            return
        except Exception as exc:  # a library failure must not take the app down; text chat goes on
            log.exception("voice mode failed to start")
            app.call_from_thread(self._failed, f"unexpected {type(exc).__name__}: {exc} (see the log file)")
            return
        app.call_from_thread(self._opened, session, live)

    def _checking(self, message: str) -> None:
        self.bar.state = "checking…"
        self.bar.partial = message

    def _checked(self, check: AudioCheck) -> None:
        self.bar.partial = ""
        mode = "headphones mode" if check.recommended == "headphones" else f"{check.recommended} duplex"
        self.screen.notify(f"Audio check: {mode} ({check.reason}). Saved: `edge-ai audio test` measures again, "
                           "voice.mode overrides it.", title="Voice", timeout=12)

    def _starting_microphone(self) -> None:
        self.bar.partial = ""
        self.bar.state = "opening mic…"

    def _opened(self, session: VoiceSession, live: bool) -> None:
        self.opening = False
        self.session = session
        push_to_talk = self.screen.edge_app.cfg.voice.push_to_talk
        session.hearing.muted = push_to_talk
        self.bar.push_to_talk = "F10 to talk" if push_to_talk else ""
        self.bar.state = "listening"
        if not live:
            self.screen.notify(f"The microphone '{session.stream.mic.name}' has sent no sound yet; voice mode "
                               "keeps trying. If it stays silent, pick another one (voice.input_device in "
                               "settings; `edge-ai audio devices` lists them).", title="Voice",
                               severity="warning", timeout=15)

    def _failed(self, reason: str) -> None:
        self.opening = False
        self.bar.display = False
        self.bar.state = "off"
        self.screen.notify(f"Voice mode is unavailable: {reason}. Text chat works as before.", title="Voice",
                           severity="error", timeout=15)

    def close(self) -> None:
        """On leaving the app: stop listening and speaking (blocking: the threads join)."""
        if self.session is not None:
            self.session.close()
            self.session = None

    def talk(self) -> None:
        """Push-to-talk: toggle whether the microphone is heard."""
        if self.session is None:
            self.screen.notify("Voice mode is off (F9 turns it on).", severity="warning")
            return
        hearing = self.session.hearing
        hearing.muted = not hearing.muted
        self.bar.push_to_talk = "F10 to talk" if hearing.muted else "talking — F10 when done"

    async def cut_off(self) -> None:
        """The user typed a message or leaves the conversation: a spoken reply under way stops, and what was
        heard of it is stored (marked interrupted) before anything else is; an utterance not yet answered is
        dropped. Waits for the voice controller (milliseconds; at most CUT_OFF_WAIT)."""
        if self.session is None:
            return
        try:
            number, interrupted = await asyncio.wait_for(asyncio.wrap_future(self.session.assistant.cut_off()),
                                                         CUT_OFF_WAIT)
        except asyncio.TimeoutError:
            log.warning("the voice controller did not answer a cut-off within %.0f s", CUT_OFF_WAIT)
            return
        if interrupted is not None:
            await self._interrupted(interrupted)
        self._stale_through = max(self._stale_through, number)  # the emitted copies of its events come later
        bar = self.bar
        bar.partial, bar.reply, bar.heard = "", "", 0

    async def start_over(self) -> None:
        """The screen's conversation was replaced (its messages; its views may still be the old ones): drop
        any voice turn begun since `cut_off` (stored nowhere) and answer from the new one."""
        if self.session is None:
            return
        self._stale_through = self.session.assistant.start_over(self._history())
        if self._draw_timer is not None:
            self._draw_timer.stop()
            self._draw_timer = None
        stream, self._reply_stream, self._reply_view = self._reply_stream, None, None
        if stream is not None:
            await stream.stop()
        bar = self.bar
        bar.partial, bar.reply, bar.heard, bar.latency = "", "", 0, ""

    def follow(self) -> None:
        """A typed turn ended: the spoken replies follow on from it too."""
        if self.session is not None:
            self.session.assistant.follow(self._history())

    def _history(self) -> list[dict[str, Any]]:
        """The conversation the screen shows, as the voice replies follow on from it."""
        return [m for m in self.screen.engine_messages() if m["role"] != "system"]

    def _post(self, event: Any) -> None:
        self.screen.post_message(VoiceEvent(event))

    # -- events, on the event loop ----------------------------------------------------------------

    async def handle(self, event: Any) -> None:
        turn = getattr(event, "turn", None)
        if turn is not None and turn <= self._stale_through:
            return  # a turn of the conversation shown before
        bar = self.bar
        if isinstance(event, ev.Level):
            bar.level_db = event.db
        elif isinstance(event, ev.StateChanged):
            bar.state = event.state.value
            if event.state is ev.VoiceState.LISTENING and self._reply_view is not None:
                await self._reply_spoken()
        elif isinstance(event, ev.Partial):
            bar.partial = f"{event.confirmed} {event.tentative}".strip()
        elif isinstance(event, ev.UserTurn):
            bar.partial, bar.reply, bar.heard = "", "", 0
            await self._user_said(event.turn, event.text)
        elif isinstance(event, ev.TurnReopened):
            bar.reply, bar.heard = "", 0
            await self._take_back(event.turn)
        elif isinstance(event, ev.StopAsked):  # not stored: an answer-less user message would join the next one
            bar.partial, bar.reply, bar.heard = "", "", 0
            bar.latency = f"“{event.text}”: stopped, not answered"
            await self.screen.stop_typed_reply()  # as Esc does: a typed reply being written is what to stop
        elif isinstance(event, ev.ReplyText):
            await self._reply_grew(event)
        elif isinstance(event, ev.Spoken):
            bar.heard = min(len(bar.reply), bar.heard + len(event.text) + 1)
        elif isinstance(event, ev.Interrupted):
            await self._interrupted(event)
        elif isinstance(event, ev.TurnLatency):
            self._latency = describe_latency(event)
            bar.latency = "last turn: " + self._latency
            if self._reply_view is not None:
                self._reply_view.set_footer("speaking… · " + self._latency)
        elif isinstance(event, ev.Status):
            self.screen.notify(event.message, title="Voice")

    async def _user_said(self, turn: int, text: str) -> None:
        screen = self.screen
        await screen.stop_typed_reply()  # stored first: the spoken reply follows on from it
        stored = screen.store_user_message(text)
        self._said = (turn, stored.id) if stored is not None else None
        if stored is not None:
            await screen.chat_log.add(MessageView("user", text, message_id=stored.id))
            await screen.refresh_sidebar()

    async def _take_back(self, turn: int) -> None:
        """The user went on after a pause, before hearing the reply: the turn shown and stored, and the reply begun
        to it, are taken back; the utterance comes back whole as the next `UserTurn`."""
        said, self._said = self._said, None
        await self._end_reply_stream()
        view, self._reply_view = self._reply_view, None
        if said is not None and said[0] == turn:
            await self.screen.take_back_from(said[1])  # the reply's view, after it, goes with it
        elif view is not None:
            await view.remove()

    async def _reply_grew(self, event: ev.ReplyText) -> None:
        if self._reply_view is None or event.turn != self._reply_turn:
            self._reply_turn, self._latency = event.turn, ""
            self._reply_view = MessageView("assistant", footer="speaking…")
            await self.screen.chat_log.add(self._reply_view)
            self._reply_stream, self._reply_shown, self._pace = self._reply_view.start_stream(), "", FramePace()
        self._reply_text = event.text
        if self._pace.due():
            await self._draw_reply()
        elif self._draw_timer is None:
            self._draw_timer = self.screen.set_timer(1 / FRAME_RATE, self._draw_reply)

    async def _draw_reply(self) -> None:
        """Append to the reply's view what arrived since its last frame."""
        if self._draw_timer is not None:
            self._draw_timer.stop()
            self._draw_timer = None
        text, stream = self._reply_text, self._reply_stream
        if stream is None or text == self._reply_shown:
            return
        await stream.write(text[len(self._reply_shown):])  # a turn's reply only grows; a new turn, a new view
        self._reply_shown = text
        self.bar.reply = text.strip()
        self.screen.chat_log.anchor()

    async def _end_reply_stream(self) -> None:
        """Draw the rest and stop appending: the view's text is final from here."""
        await self._draw_reply()
        stream, self._reply_stream = self._reply_stream, None
        if stream is not None:
            await stream.stop()

    async def _reply_spoken(self) -> None:
        await self._end_reply_stream()
        await self._store_reply(self._reply_text.strip(), {"finish_reason": "stop", "voice_latency": self._latency})

    async def _interrupted(self, event: ev.Interrupted) -> None:
        if self._reply_view is None:
            return
        await self._end_reply_stream()
        await self._reply_view.body.update(event.heard)
        await self._store_reply(event.heard, {"finish_reason": "cancelled", "voice_latency": self._latency})
        self.bar.reply, self.bar.heard = "", 0

    async def _store_reply(self, text: str, metrics: dict[str, Any]) -> None:
        view, self._reply_view = self._reply_view, None
        if view is None:
            return
        stored = self.screen.store_assistant_message(text, metrics)
        view.finish(stored.id if stored else None, metrics)  # its footer as a restored conversation shows it
        self.screen.edge_app.update_status(self.screen)  # the status bar's context count includes spoken turns

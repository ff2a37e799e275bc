"""The conversation: listening -> user speaking -> thinking -> speaking, with barge-in from the last two.

    assistant = VoiceAssistant(parts, scheduler, on_event=print)
    assistant.start()          # opens the duplex stream; events flow to on_event until close()

One controller thread owns the state; everything else reports to it through one queue:
the audio worker (`Hearing`: speech started/stopped, frames, silence), the speech-to-text worker
(partials, the final transcript), the model's thread (reply tokens, via the scheduler) and the
player (a chunk started or finished playing). Blocking work never runs on the controller.

Speculative end of turn (how the reply starts within a second on a 2-core laptop): Whisper base
costs ~0.3-0.5 s per decode of a spoken question, so the final transcript is started at the first short pause
(`speculate` seconds of silence) and the LLM starts on it as soon as it is ready. Whether the turn
is over is decided by `TurnPolicy` from the words and the silence: if the user goes on speaking
first, the transcript and the reply are thrown away and the utterance continues; if the silence
reaches what the words need, the reply, by then often already generating, is committed and its
first chunk spoken.

Barge-in (the user speaks while the assistant thinks or speaks): playback is held at the first
frames of speech and resumed if they die out (a cough, a click); once the speech is confirmed the
reply's job is cancelled, the speech queue and the player are emptied, and the history keeps what
the listener heard: the chunks that finished playing and the played part of the cut one. An utterance that
only asks to stop ("Wait, stop please.", `StopPhrases`) is not answered, cutting in or not.

A turn that goes on: speech within `voice.turn_wait` of a committed turn's end, starting before the user can
have heard its reply (before it plays, or within `REACTION` of its first sound), is that turn going on: its end
was a pause for breath or a comma ("Write the numbers 1, 2." ended a turn by hand, and "3, and so on, up to
500." was cut in as a second one). The reply is silenced as at any barge-in and the utterance continues, but
what it was is decided by what was said: at the commit, the turn is taken back (`TurnReopened`) and the whole
utterance answered, unless the words after the pause only ask to stop ("Tell me a story. Stop."), in which case
the turn stands with what was heard of its reply (`Interrupted`) and the stop is not answered.

A user who turns to the keyboard (`cut_off`) stops the reply as a barge-in does; an utterance not yet
answered is dropped. A user interface that replaces the conversation (a new one, another one opened)
calls `start_over`: the turn under way is dropped, its reply silenced and forgotten, and replies follow
on from the new history. `follow` swaps the history because a typed turn went on in between: a reply
begun before it, of which nothing was shown or spoken yet, is begun again from it. A spoken reply does not
preempt a typed one: it waits behind it on the model's thread, and the user interface stops the typed
reply once the spoken turn is committed. Turn numbers come from one counter any thread may draw from, so
`start_over` can tell its caller at once which turns' events are stale, before the controller has even
seen the request.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from edge_ai.errors import EdgeAIError
from runtime.audio.duplex import Player, Playing
from runtime.audio.events import (
    Interrupted,
    Level,
    Partial,
    ReplyText,
    Spoken,
    StateChanged,
    Status,
    StopAsked,
    TurnLatency,
    TurnReopened,
    UserTurn,
    VoiceEvent,
    VoiceState,
)
from runtime.audio.hearing import FalseStart, HearEvent, Silence, SpeechFrame, SpeechOnset
from runtime.audio.stop_request import StopPhrases, said_after
from runtime.audio.turn import TurnPolicy
from runtime.audio.vad import SAMPLE_RATE, SpeechStarted
from runtime.llm.events import DoneEvent, SamplingParams, TokenEvent
from runtime.llm.scheduler import Job, Priority, Scheduler

log = logging.getLogger(__name__)

PARTIAL_EVERY = 0.5  # seconds of new speech between partial transcripts (a decode costs ~0.4 s on 2 AVX2 cores)
# words at the start of a cut-in's transcript not counted against a request to stop: heard under the echo
UNSURE_LEAD_WORDS = 3
# seconds from a reply's first sound to the hold on the user's speech within which the user cannot have been
# answering it: a person starts to speak 0.2-0.3 s after a sound at the quickest, and the hold comes 0.05-0.1 s
# after their voice reaches the microphone. Speech held sooner began as their turn's words, not a cut-in.
REACTION = 0.35


@dataclass(frozen=True)
class TurnOptions:
    policy: TurnPolicy = field(default_factory=TurnPolicy)
    speculate: float = 0.12  # seconds of silence after which the final transcript and the reply are started
    system_prompt: str = "You are a helpful voice assistant. Answer in one or two short spoken sentences."
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_tokens=120))
    reply: bool = True  # False: transcribe turns only (`edge-ai listen`), no model, no speech
    stop: StopPhrases = field(default_factory=lambda: StopPhrases(()))  # what only asks to stop: not answered


@dataclass(frozen=True)
class _WentOnFrom:
    """A committed turn the user went on from: what it was is settled at the next commit (taken back, or its
    reply cut off if the words after it only ask to stop)."""

    number: int
    transcript: str
    heard: str  # what the listener heard of its reply
    over_speech: bool  # the words after it began over its reply's sound


@dataclass
class _Turn:
    """One user utterance and the reply to it."""

    number: int
    over_speech: bool = False  # begun while the assistant's voice played: its first words are heard under the echo
    audio: list[np.ndarray] = field(default_factory=list)
    speech_end: float | None = None  # monotonic time the user's speech ended (None while speaking)
    transcript: str | None = None  # the speculative final transcript
    transcript_at: float = 0.0
    finishing: bool = False  # the final transcript has been asked for
    silence_needed: float = 0.0  # the pause that ends this turn, decided from its transcript
    committed: bool = False
    asks_to_stop: bool = False  # its transcript only asks the assistant to stop: no reply
    went_on_from: _WentOnFrom | None = None  # the committed turn this utterance goes on from, until settled
    job: Job | None = None
    reply: str = ""  # generated so far
    first_token_at: float = 0.0
    first_audio_at: float = 0.0
    chunks: list[Playing] = field(default_factory=list)
    unspoken: list[str] = field(default_factory=list)  # chunks generated before the commit
    heard: list[str] = field(default_factory=list)  # chunks that finished playing
    done: bool = False  # the reply has no more tokens
    latency_told: bool = False


class VoiceAssistant:
    """Runs a spoken conversation on a loaded model; `history` holds what was said and heard."""

    def __init__(self, *, transcriber, tts, chunker: Callable[[], object], scheduler: Scheduler,
                 player: Player, on_event: Callable[[VoiceEvent], None],
                 options: TurnOptions = TurnOptions(), history: Sequence[dict[str, str]] = ()) -> None:
        self.transcriber = transcriber  # runtime.audio.streaming_stt.StreamingTranscriber
        self.tts = tts  # runtime.audio.tts.TextToSpeech
        self._new_chunker = chunker  # () -> SpeakableChunker
        self.scheduler = scheduler
        self.player = player
        self.options = options
        self._emit = on_event
        self.history: list[dict[str, str]] = list(history)
        self.state = VoiceState.LISTENING
        self._inbox: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._stt_jobs: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._finish_wanted = threading.Event()
        self._tts_jobs: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        # A chunk being synthesised when the user cuts in must not be queued after the stop: the interrupt
        # records the turn it silenced and the TTS worker checks it under the same lock before playing.
        self._speech_lock = threading.Lock()
        self._silenced_turn = 0
        self._turn: _Turn | None = None
        self._warm_job: Job | None = None  # the conversation's prefill while nobody speaks
        # an utterance cut off while said: its words after a pause are not a new turn, until a turn's end
        self._dropping_utterance = False
        self._onset_at = 0.0  # monotonic time of the last hold on speech over the assistant (the audio worker's)
        self._turn_numbers = itertools.count(1)  # next() is atomic: the controller and start_over draw from it
        self._chunker = None
        self._since_partial = 0.0
        self._partial_pending = False
        self._threads = [threading.Thread(target=self._control, name="voice-control", daemon=True),
                         threading.Thread(target=self._listen_worker, name="voice-stt", daemon=True),
                         threading.Thread(target=self._speak_worker, name="voice-tts", daemon=True)]
        self._running = False

    # -- wiring -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        for thread in self._threads:
            thread.start()
        self._warm_up()

    def _warm_up(self) -> None:
        """Prefill the conversation so far (on a first turn, the system prompt) while nobody speaks, so the first
        reply evaluates only the user's words: the first spoken turn of a session otherwise waited ~0.2 s more
        for its first token than the later ones (gemma3-270m on 2 cores). Background priority: a reply cancels
        it."""
        if not self.options.reply or self.scheduler is None:
            return
        messages = [{"role": "system", "content": self.options.system_prompt}, *self.history,
                    {"role": "user", "content": ""}]

        def call(engine, stop):
            return engine.chat(messages, SamplingParams(max_tokens=1, temperature=0.0), stop=stop)

        try:
            self._warm_job = self.scheduler.submit(call, lambda event: None, lambda error: None,
                                                   priority=Priority.BACKGROUND)
        except EdgeAIError as exc:  # a full queue, a closed model: the first reply prefills it all instead
            log.debug("no warm-up of the conversation: %s", exc)

    def start_over(self, history: Sequence[dict[str, str]]) -> int:
        """Follow on from `history` instead (the user started a new conversation or opened another): the
        turn under way is dropped, its reply silenced at once and kept nowhere. Any thread. Returns a turn
        number: events of turns up to it belong to the old conversation (some may still arrive)."""
        last_old = next(self._turn_numbers)
        self._inbox.put(("start_over", list(history)))
        return last_old

    def cut_off(self) -> Future[tuple[int, Interrupted | None]]:
        """The user turned to the keyboard: the reply under way stops as at a barge-in (the history keeps what
        was heard) and an utterance not yet answered is dropped. Any thread. The future resolves, once the
        controller has done it, to the number of the turn cut off (0: none; its later events are stale) and
        the `Interrupted` of a reply cut off, also emitted: a caller that must store what was heard before it
        goes on (a typed message after it) cannot wait for the event, which may be queued behind it."""
        done: Future[tuple[int, Interrupted | None]] = Future()
        self._inbox.put(("cut_off", done))
        return done

    def _on_cut_off(self, done: Future[tuple[int, Interrupted | None]]) -> None:
        turn = self._turn
        if turn is None:
            done.set_result((0, None))
        elif turn.committed:
            done.set_result((turn.number, self._interrupt()))
        else:
            interrupted = self._keep_went_on_from(turn)
            self._drop_turn()
            self._dropping_utterance = True
            done.set_result((turn.number, interrupted))

    def follow(self, history: Sequence[dict[str, str]]) -> None:
        """The conversation went on outside the voice turns (a typed question and its answer): later replies
        follow on from `history`; a turn under way goes on (its reply begun again from `history` if nothing of it
        was shown or spoken yet). Any thread."""
        self._inbox.put(("follow", list(history)))

    def _on_follow(self, history: list[dict[str, str]]) -> None:
        self.history = history
        turn = self._turn
        if turn is None:
            self._warm_up()  # else the next spoken reply prefills the typed turn first (~0.6 s measured)
        elif turn.job is not None and not (turn.committed and (turn.reply or turn.done)):
            self._restart_reply(turn)  # begun without the typed turn, and nothing of it shown or spoken yet

    def _restart_reply(self, turn: _Turn) -> None:
        """Answer `turn` afresh from the history as it now is."""
        if turn.job is not None:
            turn.job.cancel()
        turn.number = next(self._turn_numbers)  # the old reply's late tokens carry the old number
        turn.done, turn.first_token_at = False, 0.0
        self._start_reply(turn)

    def _on_start_over(self, history: list[dict[str, str]]) -> None:
        self._drop_turn()
        self.history = history
        self._warm_up()

    def _drop_turn(self) -> None:
        """Forget the turn under way, its reply silenced, and listen."""
        turn, self._turn = self._turn, None
        if turn is not None:
            self._silence_turn(turn)
        self._set_state(VoiceState.LISTENING)

    def close(self) -> None:
        self._running = False
        self._inbox.put(("close", None))
        self._stt_jobs.put(("close", None))
        self._tts_jobs.put(None)
        turn = self._turn
        if turn is not None and turn.job is not None:
            turn.job.cancel()
        self.player.stop()
        for thread in self._threads:
            thread.join(timeout=5)

    def hear(self, event: HearEvent) -> None:
        """From the audio worker (Hearing's on_hear). Playback is held and resumed right here, not on the
        controller thread: the hold is what makes a barge-in audible at once."""
        if isinstance(event, SpeechOnset):
            self.player.pause()
            self._onset_at = time.monotonic()
        elif isinstance(event, FalseStart):
            self.player.resume()
        else:
            self._inbox.put(("hear", event))

    @property
    def assistant_speaking(self) -> bool:
        """True while a reply is being prepared or played: speech now is a barge-in."""
        return self.state in (VoiceState.THINKING, VoiceState.SPEAKING)

    # -- the controller thread --------------------------------------------------------------------

    def _control(self) -> None:
        while True:
            kind, payload = self._inbox.get()
            if kind == "close":
                return
            try:
                getattr(self, f"_on_{kind}")(payload)
            except Exception as exc:  # one bad turn must not end the conversation
                log.exception("voice controller failed on %s", kind)
                self._emit(Status(f"voice error: {exc}"))

    def _set_state(self, state: VoiceState) -> None:
        if state is not self.state:
            self.state = state
            self._emit(StateChanged(state))

    def _on_hear(self, event: HearEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._speech_started(event)
        elif isinstance(event, SpeechFrame):
            turn = self._turn
            if turn is not None and turn.speech_end is None:
                turn.audio.append(event.samples)
                self._stt_jobs.put(("add", event.samples))
                self._since_partial += event.samples.size / 16_000
                if self._since_partial >= PARTIAL_EVERY and not self._partial_pending:
                    self._since_partial, self._partial_pending = 0.0, True
                    self._stt_jobs.put(("update", turn.number))
        elif isinstance(event, Silence):
            self._silence(event.seconds)
        elif isinstance(event, Level):
            self._emit(event)
        # SpeechStopped: the Silence ticks that follow it time the pause

    def _speech_started(self, event: SpeechStarted) -> None:
        if self._dropping_utterance:
            return
        over_speech = self.state is VoiceState.SPEAKING
        turn = self._turn
        if self.assistant_speaking:
            if turn is not None:
                dropped = self._silence_turn(turn)
                if self._goes_on(turn, event):
                    turn.went_on_from = _WentOnFrom(turn.number, turn.transcript or "", self._heard(turn, dropped),
                                                    over_speech=bool(turn.first_audio_at))
                    turn.committed = False
                else:
                    self._end_interrupted(turn, self._heard(turn, dropped))
        else:
            self.player.resume()  # held at the onset while the reply was ending: nothing left to cut
        turn = self._turn
        if turn is not None and not turn.committed:
            # the user goes on after a pause: the speculative transcript and reply are stale
            self._discard_speculation(turn)
            turn.speech_end = None
            fresh = event.audio[event.repeated:]  # the pre-roll's start is the speech before the pause, held already
            turn.audio.append(fresh)
            self._stt_jobs.put(("add", fresh))
        else:
            turn = self._turn = _Turn(next(self._turn_numbers), over_speech)
            turn.audio.append(event.audio)
            self._since_partial, self._partial_pending = 0.0, False
            self._stt_jobs.put(("reset", None))
            self._stt_jobs.put(("add", event.audio))
        self._set_state(VoiceState.USER_SPEAKING)

    def _silence(self, seconds: float) -> None:
        if self._dropping_utterance:
            self._dropping_utterance = seconds < self.options.policy.wait  # the longest pause inside a turn
            return
        turn = self._turn
        if turn is None or turn.committed:
            return
        if turn.speech_end is None:
            turn.speech_end = time.monotonic() - seconds
        if turn.transcript is None:
            if seconds >= self.options.speculate and not turn.finishing:
                turn.finishing = True
                self._finish_wanted.set()  # a partial decode still waiting would only delay the final one
                self._stt_jobs.put(("finish", turn.number))
            return
        if seconds >= turn.silence_needed:
            self._commit(turn)

    def _on_partial_skipped(self, number: int) -> None:
        self._partial_pending = False

    def _on_partial(self, payload: tuple[int, object]) -> None:
        number, partial = payload
        self._partial_pending = False
        if self._turn is not None and number == self._turn.number and not self._turn.committed:
            self._emit(Partial(number, partial.confirmed, partial.tentative))

    def _on_final(self, payload: tuple[int, str, float]) -> None:
        number, text, at = payload
        turn = self._turn
        if turn is None or number != turn.number or turn.committed or turn.speech_end is None:
            return  # the user spoke again meanwhile: this transcript is stale
        turn.finishing = False
        text = text.strip()
        if not text:  # a cough, a noise: nothing to answer
            self._keep_went_on_from(turn)
            self._turn = None
            self._set_state(VoiceState.LISTENING)
            return
        turn.transcript, turn.transcript_at = text, at
        audio = np.concatenate(turn.audio) if self.options.policy.model is not None else None
        turn.silence_needed = self.options.policy.silence_needed(text, audio)  # once: a turn model costs ms
        said, over_speech = self._new_words(turn)
        unsure = UNSURE_LEAD_WORDS if over_speech else 0
        turn.asks_to_stop = self.options.reply and self.options.stop.asked_by(said, unsure_lead=unsure)
        if self.options.reply and not turn.asks_to_stop:
            self._start_reply(turn)

    def _start_reply(self, turn: _Turn) -> None:
        messages = [{"role": "system", "content": self.options.system_prompt}, *self.history,
                    {"role": "user", "content": turn.transcript or ""}]
        sampling = self.options.sampling
        number = turn.number

        def call(engine, stop):
            return engine.chat(messages, sampling, stop=stop)

        turn.reply, turn.unspoken = "", []
        self._chunker = self._new_chunker()
        if self._warm_job is not None:
            self._warm_job.cancel()  # the reply prefills whatever the warm-up had not
            self._warm_job = None
        # no preemption: a reply the user typed is written on (the app stops it once this turn is committed,
        # as a typed message stops a spoken reply), so a cough taken for a word cannot cut it off
        turn.job = self.scheduler.submit(call, lambda event: self._inbox.put(("token", (number, event))),
                                         lambda error: self._inbox.put(("reply_end", (number, error))),
                                         priority=Priority.NORMAL)

    def _discard_speculation(self, turn: _Turn) -> None:
        if turn.job is not None:
            turn.job.cancel()
        turn.job, turn.transcript, turn.reply, turn.unspoken = None, None, "", []
        turn.finishing, turn.done, turn.asks_to_stop = False, False, False
        turn.transcript_at = turn.first_token_at = 0.0  # else the turn's latencies are timed from the stale reply
        turn.number = next(self._turn_numbers)  # late results of the stale speculation carry the old number

    def _new_words(self, turn: _Turn) -> tuple[str, bool]:
        """What the turn's transcript adds (to the turn it went on from, if any), and whether it began over the
        assistant's voice."""
        went_on_from = turn.went_on_from
        if went_on_from is None:
            return turn.transcript or "", turn.over_speech
        return said_after(went_on_from.transcript, turn.transcript or ""), went_on_from.over_speech

    def _commit(self, turn: _Turn) -> None:
        turn.committed = True
        if turn.asks_to_stop:  # the reply it cut off is silenced already; the history is left as it is
            said = self._new_words(turn)[0]
            self._keep_went_on_from(turn)  # went on only to say stop: that turn stands, its reply cut off
            self._emit(StopAsked(turn.number, said))
            self._turn = None
            self._set_state(VoiceState.LISTENING)
            return
        went_on_from, turn.went_on_from = turn.went_on_from, None
        if went_on_from is not None:
            self._emit(TurnReopened(went_on_from.number, went_on_from.transcript))
        self._emit(UserTurn(turn.number, turn.transcript or ""))
        if turn.reply:  # generated while the turn was open: shown from now on
            self._emit(ReplyText(turn.number, turn.reply))
        if not self.options.reply:
            self._turn = None
            self._set_state(VoiceState.LISTENING)
            return
        self._set_state(VoiceState.THINKING)
        for chunk in turn.unspoken:
            self._tts_jobs.put((turn.number, chunk))
        turn.unspoken = []
        if turn.done:
            self._tts_jobs.put((turn.number, ""))

    def _on_token(self, payload: tuple[int, object]) -> None:
        number, event = payload
        turn = self._turn
        if turn is None or number != turn.number:
            return
        if isinstance(event, TokenEvent) and event.text:
            if not turn.first_token_at:
                turn.first_token_at = event.at
            turn.reply += event.text
            if turn.committed:
                self._emit(ReplyText(number, turn.reply))
            for chunk in self._chunker.feed(event.text):
                self._speak(turn, chunk)
        elif isinstance(event, DoneEvent):
            for chunk in self._chunker.flush():
                self._speak(turn, chunk)

    def _speak(self, turn: _Turn, chunk: str) -> None:
        if turn.committed:
            self._tts_jobs.put((turn.number, chunk))
        else:
            turn.unspoken.append(chunk)

    def _on_reply_end(self, payload: tuple[int, BaseException | None]) -> None:
        number, error = payload
        turn = self._turn
        if turn is None or number != turn.number:
            return
        turn.done = True
        if error is not None:
            self._emit(Status(f"the reply failed: {error}"))
        if turn.committed:
            self._tts_jobs.put((number, ""))  # the end of the reply's speech, once all before it has played

    def _on_chunk_started(self, payload: tuple[int, Playing]) -> None:
        number, item = payload
        turn = self._turn
        if turn is None or number != turn.number:
            return
        if not turn.first_audio_at:
            turn.first_audio_at = time.monotonic() + self.player.output_latency
            self._set_state(VoiceState.SPEAKING)
            self._tell_latency(turn)

    def _on_chunk_done(self, payload: tuple[int, Playing]) -> None:
        number, item = payload
        turn = self._turn
        if turn is None or number != turn.number:
            return
        text = str(item.tag)
        turn.heard.append(text)
        self._emit(Spoken(number, text))

    def _on_speech_done(self, number: int) -> None:
        """The TTS worker has queued the reply's last chunk and the player has played it."""
        turn = self._turn
        if turn is None or number != turn.number:
            return
        if turn.reply.strip():
            self.history += [{"role": "user", "content": turn.transcript or ""},
                             {"role": "assistant", "content": turn.reply.strip()}]
        else:  # silence would leave the user waiting, and an empty answer in the history invites more
            self._emit(Status(f"the model gave no answer to “{turn.transcript}”; ask again"))
        self._turn = None
        self._set_state(VoiceState.LISTENING)

    def _tell_latency(self, turn: _Turn) -> None:
        if turn.latency_told or turn.speech_end is None:
            return
        turn.latency_told = True
        end = turn.speech_end
        self._emit(TurnLatency(turn.number, transcript=turn.transcript_at - end,
                               first_token=(turn.first_token_at or turn.first_audio_at) - end,
                               first_audio=turn.first_audio_at - end))

    def _silence_turn(self, turn: _Turn) -> list[Playing]:
        """Cancel the turn's reply and stop its speech at once; returns what the player dropped (with how much
        of each played)."""
        if turn.job is not None:
            turn.job.cancel()
        with self._speech_lock:
            self._silenced_turn = max(self._silenced_turn, turn.number)
            dropped = self.player.stop()
        while True:  # chunks not yet synthesised
            try:
                self._tts_jobs.get_nowait()
            except queue.Empty:
                break
        return dropped

    def _heard(self, turn: _Turn, dropped: list[Playing]) -> str:
        """What the listener heard of the turn's reply: the chunks that finished playing and the played part of
        the cut one (of those `_silence_turn` dropped)."""
        cut = next((item for item in dropped if item.played > 0), None)
        heard = " ".join(turn.heard)
        if cut is not None:
            heard = (heard + " " + _played_part(str(cut.tag), cut, self.player.output_latency)).strip()
        return heard

    def _goes_on(self, turn: _Turn, event: SpeechStarted) -> bool:
        """The user speaks again after a pause that could be one inside a turn (`voice.turn_wait`), before they
        can have heard the reply: before it plays (held at their first sound, it never starts) or too soon after
        its first sound to be answering it (`REACTION`). Speech later on is cutting in."""
        if not turn.committed or turn.speech_end is None:
            return False
        # the pause counted to the start of the pre-roll: a little longer than it was
        pause = time.monotonic() - event.audio.size / SAMPLE_RATE - turn.speech_end
        into_reply = self._onset_at - turn.first_audio_at if turn.first_audio_at else None
        log.debug("speech %.2f s after turn %d ended, held %s s into its reply's sound", pause, turn.number,
                  "-" if into_reply is None else f"{into_reply:.2f}")
        return pause <= self.options.policy.wait and (into_reply is None or into_reply <= REACTION)

    def _interrupt(self) -> Interrupted | None:
        turn = self._turn
        if turn is None:
            return None
        return self._end_interrupted(turn, self._heard(turn, self._silence_turn(turn)))

    def _end_interrupted(self, turn: _Turn, heard: str) -> Interrupted:
        """The turn's reply was cut off (silenced already): the history keeps what the listener heard of it."""
        interrupted = self._keep_cut_reply(turn.number, turn.transcript or "", heard)
        self._turn = None
        self._set_state(VoiceState.LISTENING)
        return interrupted

    def _keep_went_on_from(self, turn: _Turn) -> Interrupted | None:
        """The utterance that went on from a committed turn ends as no part of it (it only asked to stop, was
        dropped, or was a noise): that turn stands, and its reply was cut off where the utterance began."""
        went_on_from, turn.went_on_from = turn.went_on_from, None
        if went_on_from is None:
            return None
        return self._keep_cut_reply(went_on_from.number, went_on_from.transcript, went_on_from.heard)

    def _keep_cut_reply(self, number: int, transcript: str, heard: str) -> Interrupted:
        self.history += [{"role": "user", "content": transcript}, {"role": "assistant", "content": heard}]
        interrupted = Interrupted(number, heard)
        self._emit(interrupted)
        return interrupted

    # -- workers ----------------------------------------------------------------------------------

    def _listen_worker(self) -> None:
        """Speech-to-text: runs the transcriber's decodes so the controller never blocks on Whisper."""
        while True:
            kind, payload = self._stt_jobs.get()
            if kind == "close":
                return
            try:
                if kind == "reset":
                    self.transcriber.reset()
                elif kind == "add":
                    self.transcriber.add(payload)
                elif kind == "update":
                    if self._finish_wanted.is_set():
                        self._inbox.put(("partial_skipped", payload))
                    else:
                        self._inbox.put(("partial", (payload, self.transcriber.update())))
                elif kind == "finish":
                    self._finish_wanted.clear()
                    text = self.transcriber.finish()
                    self._inbox.put(("final", (payload, text, time.monotonic())))
            except Exception as exc:
                log.exception("speech-to-text failed")
                self._inbox.put(("final", (payload, "", time.monotonic())))
                self._emit(Status(f"speech-to-text failed: {exc}"))

    def _speak_worker(self) -> None:
        """Text-to-speech: synthesises each chunk while the earlier ones play."""
        while True:
            job = self._tts_jobs.get()
            if job is None:
                return
            number, chunk = job
            if not chunk:  # the reply's end: tell the controller once everything queued has played
                self.player.play(np.zeros(1, dtype=np.float32), 16_000, tag="",
                                 on_done=lambda item, n=number: self._inbox.put(("speech_done", n)))
                continue
            if number <= self._silenced_turn:
                continue  # a reply the user cut off: queued before the interrupt drained the jobs
            try:
                samples = self.tts.synthesize(chunk)
            except Exception as exc:
                log.exception("text-to-speech failed")
                self._emit(Status(f"text-to-speech failed: {exc}"))
                continue
            with self._speech_lock:
                if number <= self._silenced_turn:
                    continue  # cut off while this chunk was being synthesised: it is never heard
                self.player.play(samples, self.tts.sample_rate, tag=chunk,
                                 on_start=lambda item, n=number: self._inbox.put(("chunk_started", (n, item))),
                                 on_done=lambda item, n=number: self._inbox.put(("chunk_done", (n, item))))


def _played_part(text: str, item: Playing, output_latency: float) -> str:
    """The words of a cut chunk the listener heard: its played share, less what was still in the device."""
    heard_samples = max(0, item.played - int(output_latency * item.rate))
    share = heard_samples / max(1, item.samples.size)
    words = text.split()
    return " ".join(words[: int(len(words) * share)])

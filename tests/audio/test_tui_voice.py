"""The terminal app's voice mode through Pilot, on the PulseAudio null sink with the real default models:
F9 starts listening, a spoken question becomes a stored user message, the spoken reply a stored
assistant message, and the voice bar shows the state and the latency breakdown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from pilot_wait import wait_for
from pulse import play_into

from convert.onnx.speech import SAMPLE_RATE, speak, word_errors
from edge_ai.config import Config
from edge_ai.history import HistoryStore
from edge_ai.paths import get_paths
from runtime.audio.assistant import UNSURE_LEAD_WORDS
from tui.screens.chat import title_from

pytestmark = pytest.mark.slow
STORY = "Tell me a long story about a dragon and a knight."  # a reply long enough to be cut off


def play_into_room(text: str, path: Path) -> None:
    play_into("vsink", speak(text), path)


async def voice_on(app, pilot):
    """The model loaded and voice mode started: (the chat screen, its voice assistant)."""
    await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model")
    screen = app.chat_screen
    await pilot.press("f9")
    await wait_for(pilot, lambda: screen.voice.on, "voice mode to start")
    return screen, screen.voice.session.assistant


async def a_story_being_told(app, pilot, tmp_path: Path):
    """Voice mode on, a long story asked for aloud and being spoken: (the chat screen, its voice bar, the
    voice assistant)."""
    from tui.widgets.voice_bar import VoiceBar

    await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model")
    screen = app.chat_screen
    bar = screen.query_one("#voice-bar", VoiceBar)
    await pilot.press("f9")
    await wait_for(pilot, lambda: screen.voice.on and bar.state == "listening", "voice mode to start")
    await asyncio.to_thread(play_into_room, STORY, tmp_path / "q.wav")
    await wait_for(pilot, lambda: bar.state == "speaking", "the reply to be spoken")
    return screen, bar, screen.voice.session.assistant


def turns_heard(screen) -> list[str]:
    """What the voice mode is told the user said from now on ("UserTurn: ...", "StopAsked: ..."), in order: the
    transcripts a failure names."""
    from runtime.audio import events as ev

    heard: list[str] = []
    handle = screen.voice.handle

    async def recorded(event) -> None:
        if isinstance(event, ev.UserTurn | ev.StopAsked):
            heard.append(f"{type(event).__name__}: {event.text}")
        await handle(event)

    screen.voice.handle = recorded
    return heard


async def a_long_typed_reply_being_written(screen, pilot) -> None:
    screen.prompt.focus()
    screen.prompt.text = "Write the numbers 1, 2, 3 and so on up to 500."  # ~12 s of reply (sampling.max_tokens 600)
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.job is not None and screen.job.saved.stored is not None,
                   "the typed reply to be written")


def make_app(**values: object):
    from tui.app import EdgeAIApp

    base = {"model.context": 1024, "sampling.max_tokens": 30, "sampling.temperature": 0.0, "voice.mode": "full"}
    return EdgeAIApp(Config().with_values({**base, **values}))


async def test_voice_mode_turns_a_spoken_question_into_a_stored_spoken_reply(room, registered_model, tmp_path):
    from tui.widgets.chat_log import MessageView
    from tui.widgets.status_bar import StatusBar
    from tui.widgets.voice_bar import VoiceBar

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model")
        screen = app.chat_screen
        bar = screen.query_one("#voice-bar", VoiceBar)
        assert not bar.display
        await pilot.press("f9")
        await wait_for(pilot, lambda: screen.voice.on and bar.state == "listening", "voice mode to start")
        assert bar.display
        assert screen.voice.session.stream.callbacks > 0  # "listening" only once the microphone's sound arrives
        await asyncio.to_thread(play_into_room, "What is the capital of France?", tmp_path / "q.wav")

        def views(role: str) -> list[MessageView]:
            return [v for v in screen.chat_log.views() if v.role == role]

        await wait_for(pilot, lambda: views("user") and "capital" in views("user")[0].text.lower(), "the question")
        await wait_for(pilot, lambda: views("assistant") and views("assistant")[0].footer.startswith("spoken"),
                       "the reply to be spoken")
        assert "transcript" in bar.latency and "first audio" in bar.latency
        status = screen.query_one("#status", StatusBar)
        await wait_for(pilot, lambda: status.context_used > 0, "the status bar to count the spoken turn's context")
        assert screen.conversation is not None
        with HistoryStore(get_paths().history_db) as store:
            stored = store.messages(screen.conversation.id)
        assert [m.role for m in stored] == ["user", "assistant"]
        assert stored[1].content == views("assistant")[0].text.strip()
        await pilot.press("f9")
        await wait_for(pilot, lambda: not screen.voice.on and not bar.display, "voice mode to stop")


async def test_voice_mode_that_cannot_start_says_why_and_text_chat_goes_on(room, registered_model):
    from tui.widgets.voice_bar import VoiceBar

    app = make_app(**{"voice.input_device": "no-such-microphone"})
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model")
        screen = app.chat_screen
        await pilot.press("f9")
        await wait_for(pilot, lambda: any("no-such-microphone" in str(n.message) for n in app._notifications),
                       "the reason voice mode is unavailable")
        assert not screen.voice.on and not screen.query_one("#voice-bar", VoiceBar).display
        screen.prompt.focus()
        await pilot.press(*"Hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.last_done is not None, "a typed reply")


async def test_voice_mode_checks_the_audio_the_first_time_it_starts(room, registered_model, edge_home):
    """With voice.mode auto and no saved check, the first F9 runs `edge-ai audio test` (shown in the bar),
    saves its verdict and says it, then listens in the mode it chose; the next start does not check again."""
    from runtime.audio.session import saved_audio_check
    from tui.widgets.voice_bar import VoiceBar

    assert saved_audio_check() is None
    app = make_app(**{"voice.mode": "auto"})
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model")
        screen = app.chat_screen
        bar = screen.query_one("#voice-bar", VoiceBar)
        await pilot.press("f9")
        await wait_for(pilot, lambda: bar.state == "checking…" and bar.partial, "the audio check")
        await wait_for(pilot, lambda: screen.voice.on and bar.state == "listening", "voice mode to start")
        saved = saved_audio_check()
        assert saved is not None and saved["recommended"] in ("full", "half", "headphones")
        assert screen.voice.session.hearing.mode == saved["recommended"]
        assert any(str(n.message).startswith("Audio check: ") and saved["reason"] in str(n.message)
                   for n in app._notifications)
        assert bar.partial == ""
        await pilot.press("f9")
        await wait_for(pilot, lambda: not screen.voice.on, "voice mode to stop")
        await pilot.press("f9")
        await wait_for(pilot, lambda: screen.voice.on and bar.state == "listening", "voice mode to start again")
        assert sum(str(n.message).startswith("Audio check: ") for n in app._notifications) == 1
        await pilot.press("f9")
        await wait_for(pilot, lambda: not screen.voice.on, "voice mode to stop")


async def test_a_new_chat_while_a_reply_is_spoken_silences_it_and_starts_afresh(room, registered_model, tmp_path):
    """Ctrl+N in the middle of a spoken reply: the speech stops at once, what was heard of it is stored in
    the old conversation (marked interrupted, as a barge-in would), nothing of it is drawn on the new one,
    and the spoken replies follow on from the new, empty conversation (before, the reply played on into the
    empty screen and the model kept answering in the old conversation)."""
    app = make_app(**{"sampling.max_tokens": 80})
    async with app.run_test(size=(120, 40)) as pilot:
        screen, bar, assistant = await a_story_being_told(app, pilot, tmp_path)
        first = screen.conversation
        assert first is not None
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: bar.state == "listening" and not assistant.player.queued(),
                       "the reply to stop", seconds=5)
        await wait_for(pilot, lambda: assistant.history == [], "the spoken replies to start afresh", seconds=5)
        await pilot.pause(2.0)
        assert screen.conversation is None and not list(screen.chat_log.views())
        assert bar.reply == "" and bar.state == "listening"
        with HistoryStore(get_paths().history_db) as store:
            old = store.messages(first.id)
            assert [m.role for m in old] == ["user", "assistant"]
            assert old[1].metrics["finish_reason"] == "cancelled"
            assert len(store.list_conversations()) == 1
        await pilot.press("f9")
        await wait_for(pilot, lambda: not screen.voice.on, "voice mode to stop")


async def test_saying_stop_over_a_reply_stops_it_and_gets_no_answer(room, registered_model, tmp_path):
    """"Stop, please stop." over the spoken reply: it stops (stored as heard, interrupted). What is heard as asking
    to stop is answered by nothing, shown on the voice bar and not stored (an unanswered user message would be
    joined to the next one in the model's context); what is misheard under the echo (it happens: "Go to the
    rooftop.") is a turn, stored and answered. Whisper may also split it at its comma pause: in CI "Stop," became
    a turn of its own, misheard, whose reply the "please stop." that followed stopped."""
    app = make_app(**{"sampling.max_tokens": 80})
    async with app.run_test(size=(120, 40)) as pilot:
        screen, bar, assistant = await a_story_being_told(app, pilot, tmp_path)
        said = turns_heard(screen)
        # a moment into the reply, as one answering it: speech within REACTION of its first sound is the turn
        # going on, and a stop misheard there is taken as the rest of the request (CI: "each turn's reply")
        await pilot.pause(0.5)
        await asyncio.to_thread(play_into_room, "Stop, please stop.", tmp_path / "stop.wav")
        await wait_for(pilot, lambda: "not answered" in bar.latency or len(screen.messages) > 2, "the cut-in",
                       seconds=15)
        await pilot.pause(2.0)  # time enough for an answer to start, were one started

        def stored_messages() -> list:
            with HistoryStore(get_paths().history_db) as store:
                return store.messages(screen.conversation.id)

        turns = [t.removeprefix("UserTurn: ") for t in said if t.startswith("UserTurn: ")]
        await wait_for(pilot, lambda: len(stored_messages()) >= 2 + 2 * len(turns), "each turn's reply to be stored",
                       seconds=30)  # (a reply is stored once it ends, maybe cut short by the stop that followed)
        stored = stored_messages()
        assert [m.role for m in stored[:2]] == ["user", "assistant"]
        assert stored[1].metrics["finish_reason"] == "cancelled"
        assert [m.content for m in stored[2:] if m.role == "user"] == turns, (said, stored)  # stops are not stored
        assert not any(assistant.options.stop.asked_by(t, unsure_lead=UNSURE_LEAD_WORDS) for t in turns), said
        assert len(stored) == 2 + 2 * len(turns), (said, stored)
        if not turns:
            assert [v.role for v in screen.chat_log.views()] == ["user", "assistant"]
        if said[-1].startswith("StopAsked: "):  # the last word was a stop: nothing answers it
            assert bar.state == "listening" and not assistant.player.queued(), said
        await pilot.press("f9")
        await wait_for(pilot, lambda: not screen.voice.on, "voice mode to stop")


async def test_a_typed_turn_with_voice_on_is_part_of_what_the_spoken_replies_follow_on_from(room, registered_model):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        screen, assistant = await voice_on(app, pilot)
        screen.prompt.focus()
        await pilot.press(*"Hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.last_done is not None, "a typed reply")
        await wait_for(pilot, lambda: [m["role"] for m in assistant.history] == ["user", "assistant"],
                       "the spoken replies to follow on from the typed turn", seconds=5)
        assert assistant.history[0]["content"] == "Hello"
        assert assistant.history[1]["content"] == screen.messages[-1].content
        await pilot.press("f9")
        await wait_for(pilot, lambda: not screen.voice.on, "voice mode to stop")


async def test_typing_while_a_reply_is_spoken_stops_it_and_keeps_what_was_heard_in_order(room, registered_model,
                                                                                        tmp_path):
    """The user types while the assistant speaks: the speech stops as at a barge-in, what was heard of it is
    stored before the typed message, and both the typed reply and later spoken ones follow on from that
    conversation (before, the spoken reply played on and was stored after the typed message, and the
    spoken replies' context held the spoken question twice)."""
    app = make_app(**{"sampling.max_tokens": 80})
    async with app.run_test(size=(120, 40)) as pilot:
        screen, bar, assistant = await a_story_being_told(app, pilot, tmp_path)
        screen.prompt.focus()
        screen.prompt.text = "Hello"  # typed at once: Pilot's key presses wait for the busy app (~1 s each)
        await pilot.press("enter")
        await wait_for(pilot, lambda: bar.state == "listening" and not assistant.player.queued(),
                       "the spoken reply to stop", seconds=5)
        await wait_for(pilot, lambda: screen.last_done is not None, "the typed reply")
        await pilot.pause(2.0)
        with HistoryStore(get_paths().history_db) as store:
            stored = store.messages(screen.conversation.id)
        assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
        # the spoken question first, as Whisper heard it in the room ("... about Zadragun Pagan and the Knight." once)
        assert word_errors(STORY, stored[0].content)[0] <= 4 and stored[2].content == "Hello", stored
        assert stored[1].metrics["finish_reason"] == "cancelled"
        views = list(screen.chat_log.views())
        assert [v.role for v in views] == ["user", "assistant", "user", "assistant"]
        context = [m.content for m in stored if m.content or m.role == "user"]  # (nothing heard yet: left out)
        await wait_for(pilot, lambda: [m["content"] for m in assistant.history] == context,
                       "the spoken replies to follow on from the conversation", seconds=5)
        await pilot.press("f9")
        await wait_for(pilot, lambda: not screen.voice.on, "voice mode to stop")


async def test_speaking_while_a_typed_reply_is_written_stops_it_and_the_spoken_reply_follows_on_from_it(
        room, registered_model, tmp_path):
    """The other way round: the user speaks while a typed reply is written. Once the spoken turn is committed the
    typed reply stops (stored as stopped, before the spoken question), and the spoken reply is written from the
    conversation with the typed turn in it, each message once (before, the spoken turn cut the typed reply at its
    speculative transcript, and its reply had been begun without the typed turn)."""
    app = make_app(**{"sampling.max_tokens": 600})
    async with app.run_test(size=(120, 40)) as pilot:
        screen, assistant = await voice_on(app, pilot)
        asked: list[list[str]] = []  # each conversation the model was asked to answer (the real model answers)
        engine = app.engines.engine
        chat = engine.chat

        def recorded_chat(messages, sampling, *, stop=None):
            asked.append([m["content"] for m in messages])
            return chat(messages, sampling, stop=stop)

        engine.chat = recorded_chat
        await a_long_typed_reply_being_written(screen, pilot)
        await asyncio.to_thread(play_into_room, "What is the capital of France?", tmp_path / "q.wav")

        def views(role: str) -> list:
            return [v for v in screen.chat_log.views() if v.role == role]

        await wait_for(pilot, lambda: len(views("assistant")) == 2 and views("assistant")[1].footer.startswith("spoken"),
                       "the spoken reply", seconds=60)
        with HistoryStore(get_paths().history_db) as store:
            stored = store.messages(screen.conversation.id)
        assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
        assert stored[1].metrics["finish_reason"] == "cancelled" and "capital" in stored[2].content.lower()
        assert [v.role for v in screen.chat_log.views()] == ["user", "assistant", "user", "assistant"]
        spoken_reply_asked = [a for a in asked if a[-1] == stored[2].content][-1]
        assert spoken_reply_asked[1:] == [m.content for m in stored[:3]]
        await wait_for(pilot, lambda: [m["content"] for m in assistant.history] == [m.content for m in stored],
                       "the spoken replies to follow on from the conversation, each message once", seconds=5)
        await pilot.press("f9")
        await wait_for(pilot, lambda: not screen.voice.on, "voice mode to stop")


async def test_saying_stop_while_a_typed_reply_is_written_stops_it_as_esc_does(room, registered_model, tmp_path):
    app = make_app(**{"sampling.max_tokens": 600})
    async with app.run_test(size=(120, 40)) as pilot:
        screen, assistant = await voice_on(app, pilot)
        said = turns_heard(screen)
        await a_long_typed_reply_being_written(screen, pilot)
        # (not "Stop, please.": Whisper base reads espeak's "please" as "clean", or "Stop" as "Top", for 3 of 12
        # placements of the clip; "Okay, stop." 12 of 12)
        await asyncio.to_thread(play_into_room, "Okay, stop.", tmp_path / "stop.wav")
        await wait_for(pilot, lambda: screen.job is None, "the typed reply to stop", seconds=15)
        assert "not answered" in screen.voice.bar.latency, said
        await pilot.pause(2.0)  # time enough for an answer to start, were one started
        with HistoryStore(get_paths().history_db) as store:
            stored = store.messages(screen.conversation.id)
        assert [m.role for m in stored] == ["user", "assistant"]
        assert stored[1].metrics["finish_reason"] == "cancelled" and len(stored[1].content) < 600
        assert [v.role for v in screen.chat_log.views()] == ["user", "assistant"]
        await pilot.press("f9")
        await wait_for(pilot, lambda: not screen.voice.on, "voice mode to stop")


async def test_going_on_right_after_a_spoken_turn_ended_takes_it_back_and_stores_the_whole_turn(
        room, registered_model, tmp_path):
    """A pause after words that look finished ends the turn (0.1 s here), and the user goes on before the reply
    plays: the turn shown and stored is taken back with the reply begun to it, and the whole utterance is shown,
    stored and answered as one turn."""
    from tui.widgets.voice_bar import VoiceBar

    app = make_app(**{"voice.turn_pause": 0.1, "voice.turn_wait": 1.5})
    async with app.run_test(size=(120, 40)) as pilot:
        screen, _ = await voice_on(app, pilot)
        engine = app.engines.engine
        chat = engine.chat

        def slow_chat(messages, sampling, *, stop=None):  # as a larger model: no audio for 1.5 s
            time.sleep(1.5)
            yield from chat(messages, sampling, stop=stop)

        engine.chat = slow_chat
        bar = screen.query_one("#voice-bar", VoiceBar)
        await wait_for(pilot, lambda: bar.state == "listening", "the microphone")
        heard = turns_heard(screen)
        pause = np.zeros(SAMPLE_RATE * 9 // 10, dtype=np.float32)  # ends the turn; within voice.turn_wait
        speech = np.concatenate([speak("What color is the sky on a clear day?"), pause, speak("And at night?")])
        await asyncio.to_thread(play_into, "vsink", speech, tmp_path / "q.wav")

        def views(role: str) -> list:
            return [v for v in screen.chat_log.views() if v.role == role]

        await wait_for(pilot, lambda: views("assistant") and views("assistant")[-1].footer.startswith("spoken"),
                       "the reply to be spoken")
        assert len(heard) == 2, heard  # the turn before the pause, then the whole utterance
        assert [v.text for v in views("user")] == [heard[1].removeprefix("UserTurn: ")]
        assert len(views("assistant")) == 1
        with HistoryStore(get_paths().history_db) as store:
            stored = store.messages(screen.conversation.id)
        assert [m.role for m in stored] == ["user", "assistant"]
        errors, words = word_errors("What color is the sky on a clear day? And at night?", stored[0].content)
        assert errors / words <= 0.4, stored[0].content  # both sides of the pause
        # the conversation begun by the turn taken back is titled after the whole one
        assert screen.conversation.title == title_from(stored[0].content), screen.conversation.title

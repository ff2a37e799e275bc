"""The terminal app's screen attachment through Pilot, on Xvfb with a real xterm and the real default model:
F12 reads the screen into an editable preview, private windows and PII never reach it, and the attached
text goes with the next message (stored in the history as the model saw it); /screen QUESTION sends at once."""

from __future__ import annotations

import pytest
from pilot_wait import wait_for

from edge_ai.config import Config
from edge_ai.history import HistoryStore
from edge_ai.paths import get_paths

pytestmark = pytest.mark.slow


def make_app():
    from tui.app import EdgeAIApp

    return EdgeAIApp(Config().with_values({"model.context": 2048, "sampling.max_tokens": 16,
                                           "sampling.temperature": 0.0}))


async def _preview(pilot, app):
    from tui.screens.screen_preview import ScreenPreviewScreen

    await wait_for(pilot, lambda: isinstance(app.screen, ScreenPreviewScreen), "the screen preview", 180)
    return app.screen


async def test_f12_attaches_the_reviewed_screen_text_to_the_next_message(display, xterm, registered_model):
    from textual.widgets import TextArea

    xterm("notes", "Deploy code word: PINEAPPLE. Mail ops@example.com", geometry="60x3+0+0")
    xterm("KeePassXC", "vault secret HUNTER2", geometry="40x3+0+300")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model")
        chat = app.chat_screen
        await pilot.press("f12")
        preview = await _preview(pilot, app)
        text = preview.query_one("#screen-preview-text", TextArea).text
        assert "PINEAPPLE" in text and "[email]" in text, text
        assert "HUNTER2" not in text and "example.com" not in text
        preview.query_one("#screen-preview-text", TextArea).text = text + "\n(edited)"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "screen attached" in chat.status.attachment, "the attachment indicator")
        chat.prompt.text = "What is the code word?"
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.job is None and len(chat.messages) == 2, "the reply", 180)
        assert chat.status.attachment == ""
        with HistoryStore(get_paths().history_db) as store:
            stored = store.messages(chat.conversation.id)
        assert stored[0].content.startswith("Text on my screen:") and "PINEAPPLE" in stored[0].content
        assert "(edited)" in stored[0].content and stored[0].content.endswith("What is the code word?")
        assert "HUNTER2" not in stored[0].content


async def test_with_a_vision_model_the_screen_image_goes_with_the_message_and_stays_for_the_next(
        display, xterm, registered_model, mmproj):
    from tui.app import EdgeAIApp

    xterm("notes", "Build status: GREEN", geometry="50x3+0+0")
    app = EdgeAIApp(Config().with_values({"model.context": 2048, "sampling.max_tokens": 8, "sampling.temperature": 0.0,
                                          "screen.vision_mmproj": str(mmproj), "screen.downscale_width": 320}))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model")
        chat = app.chat_screen
        await pilot.press("f12")
        preview = await _preview(pilot, app)
        assert "The image (320x200" in str(preview.query_one("#screen-preview-note").render())
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "+ image" in chat.status.attachment, "the attachment indicator")
        chat.prompt.text = "What is the build status?"
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.job is None and len(chat.messages) == 2, "the reply", 180)
        first = chat.last_done.metrics
        image = chat.images[chat.messages[0].id]
        assert image.shape == (200, 320, 3) and "GREEN" in chat.messages[0].content
        from tui.widgets.chat_log import MessageView

        shown = [view for view in chat.chat_log.query(MessageView) if view.role == "user"]
        assert shown[0].footer == "with the screen's image (320x200)"
        text_only = app.engines.engine.encode([{"role": "user", "content": chat.messages[0].content}])
        assert first.prompt_tokens >= len(text_only) + 4  # tiny_mmproj's 4 image tokens
        chat.prompt.text = "Thanks."
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.job is None and len(chat.messages) == 4, "the second reply", 180)
        assert chat.last_done.metrics.cached_tokens >= first.prompt_tokens - 1  # the image stayed in the cache
        with HistoryStore(get_paths().history_db) as store:  # the history holds text only
            assert [m.content for m in store.messages(chat.conversation.id)] == [m.content for m in chat.messages]


async def test_screen_command_sends_the_question_with_the_screen_and_cancel_sends_nothing(display, xterm,
                                                                                        registered_model):
    xterm("notes", "Meeting room: BLUE SEVEN", geometry="50x3+0+0")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model")
        chat = app.chat_screen
        chat.prompt.text = "/screen Which meeting room?"
        await pilot.press("enter")
        await _preview(pilot, app)
        await pilot.press("escape")
        await pilot.pause(0.5)
        assert chat.messages == [] and chat.job is None
        chat.prompt.text = "/screen Which meeting room?"
        await pilot.press("enter")
        await _preview(pilot, app)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: chat.job is None and len(chat.messages) == 2, "the reply", 180)
        assert "BLUE SEVEN" in chat.messages[0].content
        assert chat.messages[0].content.endswith("Which meeting room?")


async def test_no_display_is_a_notification_and_chat_goes_on(registered_model, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model")
        chat = app.chat_screen
        await pilot.press("f12")
        await wait_for(pilot, lambda: any("DISPLAY" in str(n.message) for n in app._notifications), "the error")
        assert chat.status.attachment == "" and chat.status.state == ""


async def test_screen_watch_shows_its_state_saves_changes_and_pauses_at_once(display, xterm, registered_model,
                                                                             tmp_path):
    from runtime.screen.screen_log import ScreenLog
    from tui.app import EdgeAIApp

    db = tmp_path / "watch.sqlite3"
    app = EdgeAIApp(Config().with_values({"model.context": 2048, "screen.watch_db": str(db),
                                          "screen.watch_interval": 1.0}))

    def found(word: str) -> bool:
        with ScreenLog.open(db) as log:
            return bool(log.search(word))

    xterm("notes", "Watched word: TANGERINE", geometry="50x3+0+0")
    async with app.run_test(size=(120, 40)) as pilot:
        chat = app.chat_screen
        assert chat.status.watch == ""  # opt-in: nothing watches until asked
        chat.action_toggle_watch()
        await wait_for(pilot, lambda: "1 saved" in chat.status.watch, "the first saved change", 180)
        assert found("TANGERINE") and db.stat().st_mode & 0o777 == 0o600
        await pilot.press("ctrl+g")
        assert chat.status.watch.startswith("watch paused")
        xterm("more", "Second word: APRICOT", geometry="50x3+0+200")
        await pilot.pause(3.0)
        assert not found("APRICOT") and chat.status.watch.startswith("watch paused")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: "2 saved" in chat.status.watch, "the change seen after resuming", 180)
        assert found("APRICOT")
        chat.action_toggle_watch()
        await wait_for(pilot, lambda: chat.status.watch == "", "watch mode off", 60)

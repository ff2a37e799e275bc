"""The terminal app driven through Textual's Pilot, with the real default model.

Every test gets its own EDGE_AI_HOME (conftest), so history, config and registered models are
isolated. Waits poll for a condition (never a wall-clock assert); model.threads=1 keeps llama.cpp
fast on a shared 2-core machine (two spinning threads on one free core decode ~50x slower).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_ai.config import Config
from edge_ai.history import HistoryStore
from edge_ai.paths import get_paths

pytestmark = pytest.mark.slow

SIZE = (120, 40)


def make_cfg(**values: object) -> Config:
    base = {"model.context": 1024, "model.threads": 1, "sampling.max_tokens": 24, "sampling.seed": 7}
    return Config().with_values({**base, **values})


def make_app(cfg: Config | None = None):
    from tui.app import EdgeAIApp

    return EdgeAIApp(cfg or make_cfg())


async def wait_for(pilot, condition: Callable[[], object], what: str, steps: int = 1200) -> None:
    """Poll `condition` while the app runs (up to ~60 s: generous for a loaded machine)."""
    for _ in range(steps):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_ready(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.engines.engine is not None and app.engine_state == "ready", "the model to load")


async def send(pilot, text: str) -> object:
    """Type `text` into the input, press Enter, wait for the reply; returns its DoneEvent."""
    screen = pilot.app.chat_screen
    before = screen.last_done
    screen.prompt.focus()
    await pilot.press(*text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.last_done is not before and not screen.generating, f"a reply to {text!r}")
    return screen.last_done


def palette_hits(app) -> list[str]:
    from textual.command import CommandList

    lists = app.screen.query(CommandList)
    if not lists:
        return []
    options = lists.first()
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


def stored_messages(conversation_id: int) -> list:
    with HistoryStore(get_paths().history_db) as store:
        return store.messages(conversation_id)


async def test_chat_streams_reply_then_retry_and_edit(registered_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets.markdown import MarkdownStream

    frames: list[str] = []  # the text each screen update appended to the reply
    write = MarkdownStream.write

    async def counted_write(self: MarkdownStream, text: str) -> None:
        frames.append(text)
        await write(self, text)

    monkeypatch.setattr(MarkdownStream, "write", counted_write)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        screen = app.chat_screen
        done = await send(pilot, "Hello there")
        assert done.text.strip(), "the model wrote nothing"
        assert len(frames) > 1 and "".join(frames) == done.text, "the reply was not streamed as it came"

        user_view, reply_view = screen.chat_log.views()
        assert (user_view.role, user_view.text) == ("user", "Hello there")
        assert reply_view.role == "assistant"
        assert reply_view.text == done.text  # what is on screen is exactly what the model said
        first_words = done.text.split()[0]
        assert any(first_words in str(block.render()) for block in reply_view.body.children)
        assert "tok/s" in reply_view.footer
        assert screen.status.model == "gemma3-270m"
        assert screen.status.context_size == 1024 and screen.status.context_used > 0
        assert "tok/s" in screen.status.render() and "RSS" in screen.status.render()

        conversation = screen.conversation
        assert conversation is not None and conversation.title == "Hello there"
        messages = stored_messages(conversation.id)
        assert [(m.role, m.content) for m in messages] == [("user", "Hello there"), ("assistant", done.text)]
        assert messages[1].metrics["finish_reason"] == done.reason
        assert messages[1].metrics["model"] == "gemma3-270m"

        # Input history, and a newline without sending.
        await pilot.press("up")
        assert screen.prompt.text == "Hello there"
        await pilot.press("down")
        assert screen.prompt.text == ""
        await pilot.press("a", "ctrl+j", "b")
        assert screen.prompt.text == "a\nb"
        screen.prompt.clear()

        # Retry: the old reply is replaced, in the store and on screen.
        old_reply_id = messages[1].id
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(screen.messages) == 2 and screen.messages[1].id != old_reply_id
                       and not screen.generating, "the regenerated reply")
        messages = stored_messages(conversation.id)
        assert [m.role for m in messages] == ["user", "assistant"] and messages[1].id != old_reply_id
        assert [v.role for v in screen.chat_log.views()] == ["user", "assistant"]
        assert screen.chat_log.views()[1].text == messages[1].content

        # Edit last: the message goes back into the input and leaves the history with its reply.
        await pilot.press("ctrl+l")
        assert screen.prompt.text == "Hello there"
        assert stored_messages(conversation.id) == []
        assert screen.chat_log.views() == []

        # Send it again, then Ctrl+N: an empty new chat; the old one stays in the sidebar.
        screen.prompt.clear()
        await send(pilot, "Hello again")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: screen.conversation is None and screen.chat_log.views() == [], "a new chat")
        assert [i.title for i in screen.sidebar.items()] == ["Hello there"]
        assert [m.role for m in stored_messages(conversation.id)] == ["user", "assistant"]

        # Ctrl+B hides the sidebar (the input keeps the focus) and shows it again.
        await pilot.press("ctrl+b")
        assert not screen.sidebar.display and app.focused is screen.prompt
        await pilot.press("ctrl+b")
        assert screen.sidebar.display


async def test_escape_stops_a_long_reply_and_chat_goes_on(registered_model: Path) -> None:
    # Gemma turns: the base model then writes on until max_tokens (a transcript reply ends at its
    # first blank line), which is the long reply this test stops.
    app = make_app(make_cfg(**{"sampling.max_tokens": 800, "sampling.temperature": 0.0, "model.format": "builtin"}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        screen = app.chat_screen
        await pilot.press(*"Tell me a long story about a dragon and a knight.")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen._reply_view is not None and len(screen._reply_view.text) > 10,
                       "the first tokens")

        # The reply is in the history while it is still being written (a crash would keep it).
        def partial() -> list:
            return [m for m in stored_messages(screen.conversation.id) if m.role == "assistant" and m.content]

        await wait_for(pilot, partial, "the partial reply in the history")
        part = partial()[0]
        assert part.metrics is None  # only the final save carries metrics: this row was written mid-reply
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.last_done is not None and not screen.generating, "the stop")
        done = screen.last_done
        assert done.reason == "cancelled"
        assert done.metrics.generated_tokens < 800
        reply_view = screen.chat_log.views()[-1]
        assert reply_view.text == done.text and reply_view.has_class("stopped")
        assert "stopped" in reply_view.footer
        stored = stored_messages(screen.conversation.id)
        assert [m.role for m in stored] == ["user", "assistant"] and stored[-1].id == part.id
        assert stored[-1].content == done.text and stored[-1].metrics["finish_reason"] == "cancelled"
        assert done.text.startswith(part.content)

        app.cfg = app.cfg.with_values({"sampling.max_tokens": 12})
        second = await send(pilot, "Thanks!")
        assert second is not done and second.reason in ("stop", "length")
        assert [m.role for m in stored_messages(screen.conversation.id)] == ["user", "assistant"] * 2


async def test_status_bar_keeps_the_state_on_a_narrow_terminal(registered_model: Path) -> None:
    app = make_app(make_cfg(**{"sampling.max_tokens": 4}))
    async with app.run_test(size=(64, 24)) as pilot:
        await wait_ready(pilot)
        await send(pilot, "Hi")
        status = app.chat_screen.status
        await wait_for(pilot, lambda: status.state == "ready" and status.rss > 0, "the idle status")
        line = str(status.render())
        assert line.startswith("model: gemma3-270m") and line.endswith("ready")
        assert len(line) <= status.content_size.width
        assert "tok/s" in line and "RSS" not in line  # memory is dropped first, speed kept


async def test_history_restored_after_restart(registered_model: Path) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        done = await send(pilot, "Remember me")
        conversation_id = app.chat_screen.conversation.id

    # A second, older conversation with a code block, written straight into the store.
    with HistoryStore(get_paths().history_db) as store:
        older = store.create_conversation("Code sample")
        store.add_message(older.id, "user", "show code")
        store.add_message(older.id, "assistant", "Here:\n\n```python\nprint('hi')\n```\n")
        store.add_message(older.id, "user", "2 plus 1?")
        store.add_message(older.id, "assistant", "3.")  # Markdown: an empty list item numbered 3
        # make the chat the most recent again, so it is the one reopened
        store.add_message(conversation_id, "user", "still here")

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat_screen
        await wait_for(pilot, lambda: screen.conversation is not None and screen.sidebar.items(), "restore")
        assert screen.conversation.id == conversation_id
        assert [(v.role, v.text) for v in screen.chat_log.views()] == [
            ("user", "Remember me"), ("assistant", done.text), ("user", "still here")]
        assert "tok/s" in screen.chat_log.views()[1].footer
        assert [i.title for i in screen.sidebar.items()] == ["Remember me", "Code sample"]

        # Selecting a conversation in the sidebar loads it; the code block renders as a fence.
        screen.sidebar.list_view.focus()
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: screen.conversation.id == older.id, "the selected conversation")
        from textual.widgets._markdown import MarkdownBullet, MarkdownFence

        code = screen.chat_log.views()[1].body.query(MarkdownFence)
        assert len(code) == 1 and "print('hi')" in code.first().code
        # a reply that is only a list marker is shown: its row had no height, and the answer was a blank
        bullet = screen.chat_log.views()[3].body.query_one(MarkdownBullet)
        await wait_for(pilot, lambda: bullet.region.height == 1, "the reply '3.' shown")
        assert bullet.symbol.strip() == "3."


async def test_model_switch(registered_model: Path, model_path: Path) -> None:
    from textual.widgets import OptionList

    from edge_ai import registry
    from tui.screens.model_picker import ModelPickerScreen

    registry.add(model_path, name="other")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        first_engine = app.engines.engine
        closed: list[bool] = []
        close = first_engine.close
        first_engine.close = lambda: (closed.append(True), close())
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen), "the model picker")
        picker = app.screen
        assert [e.name for e in picker.entries] == ["gemma3-270m", "other"]
        picker.query_one(OptionList).highlighted = 1
        await pilot.press("enter")
        screen = app.chat_screen
        await wait_for(pilot, lambda: app.engines.engine is not first_engine and screen.status.model == "other",
                       "the new model")
        assert app.cfg.model.name == "other" and app.model_name == "other"
        await wait_for(pilot, lambda: closed, "the old engine to be closed")
        done = await send(pilot, "Hi")
        assert screen.chat_log.views()[-1].text == done.text
        assert stored_messages(screen.conversation.id)[-1].metrics["model"] == "other"


async def test_search_rename_export_delete(registered_model: Path, tmp_path: Path) -> None:
    from tui.screens.dialogs import ConfirmScreen, PromptScreen

    with HistoryStore(get_paths().history_db) as store:
        paris = store.create_conversation("Paris trip")
        store.add_message(paris.id, "user", "the eiffel tower is tall")
        cooking = store.create_conversation("Cooking")
        store.add_message(cooking.id, "user", "a pasta recipe please")
        store.add_message(cooking.id, "assistant", "Boil **water**.", {"finish_reason": "stop"})

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat_screen
        await wait_for(pilot, lambda: screen.conversation is not None, "restore")
        assert screen.conversation.id == cooking.id

        # Full-text search over messages.
        await pilot.press("ctrl+f")
        await pilot.press(*"eiffel")
        await wait_for(pilot, lambda: [i.title for i in screen.sidebar.items()] == ["Paris trip"], "search hit")
        assert "eiffel" in screen.sidebar.items()[0].snippet
        await pilot.press(*["backspace"] * 6)
        await wait_for(pilot, lambda: len(screen.sidebar.items()) == 2, "the full list again")

        # Rename the current conversation.
        screen.prompt.focus()
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), "the rename dialog")
        app.screen.query_one("Input").value = "Italian food"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Italian food" in [i.title for i in screen.sidebar.items()], "the new title")
        with HistoryStore(get_paths().history_db) as store:
            assert store.get_conversation(cooking.id).title == "Italian food"

        # Export to Markdown (Ctrl+S) and to JSON (command palette).
        md_path, json_path = tmp_path / "out" / "chat.md", tmp_path / "italian-food.json"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), "the export dialog")
        assert app.screen.query_one("Input").value == "italian-food.md"
        app.screen.query_one("Input").value = str(md_path)
        await pilot.press("enter")
        await wait_for(pilot, md_path.exists, "the Markdown file")
        markdown = md_path.read_text()
        assert markdown.startswith("# Italian food") and "a pasta recipe please" in markdown
        assert "Boil **water**." in markdown

        await pilot.press("ctrl+p")
        await pilot.press(*"Export conversation to JSON")
        await wait_for(pilot, lambda: palette_hits(app) and palette_hits(app)[0].startswith("Export conversation to JSON"),
                       "the palette hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), "the JSON export dialog")
        assert app.screen.query_one("Input").value == "italian-food.json"
        app.screen.query_one("Input").value = str(tmp_path)  # a directory: the file is named for the chat
        await pilot.press("enter")
        await wait_for(pilot, json_path.exists, "the JSON file")
        document = json.loads(json_path.read_text())
        assert document["conversation"]["title"] == "Italian food"
        assert [m["content"] for m in document["messages"]] == ["a pasta recipe please", "Boil **water**."]
        assert document["messages"][1]["metrics"] == {"finish_reason": "stop"}
        assert not (tmp_path / "italian-food.md").exists()
        assert screen.export(str(tmp_path / "out")) == tmp_path / "out" / "italian-food.md"
        assert (tmp_path / "out" / "italian-food.md").read_text().startswith("# Italian food")

        # Delete (F8, confirmed): gone from the store, the sidebar and the screen.
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the delete confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: [i.title for i in screen.sidebar.items()] == ["Paris trip"], "deletion")
        assert screen.conversation is None and screen.chat_log.views() == []
        with HistoryStore(get_paths().history_db) as store:
            assert [c.id for c in store.list_conversations()] == [paris.id]


async def test_settings_validate_and_save(registered_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets import Input

    from edge_ai import config as config_mod
    from tui.screens.settings import SettingsScreen, field_id

    writes: list[Path] = []
    real_write = config_mod.atomic_write_text

    def counted_write(path: Path, text: str) -> None:
        writes.append(path)
        real_write(path, text)

    monkeypatch.setattr(config_mod, "atomic_write_text", counted_write)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), "the settings screen")
        settings = app.screen
        temperature = settings.query_one(f"#{field_id('sampling.temperature')}", Input)
        temperature.value = "hot"
        await pilot.press("ctrl+s")
        assert app.screen is settings  # still open
        assert "sampling.temperature" in settings.error and "not a valid float" in settings.error
        temperature.value = "9"
        await pilot.press("ctrl+s")
        assert "out of range" in settings.error
        assert not get_paths().config_file.exists()  # nothing written while a value is wrong

        temperature.value = "0.3"
        settings.query_one(f"#{field_id('sampling.top_k')}", Input).value = "20"
        settings.query_one(f"#{field_id('sampling.seed')}", Input).value = "42"
        settings.query_one(f"#{field_id('sampling.stop')}", Input).value = "User:,###"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is app.chat_screen, "the settings screen to close")
        assert app.cfg.sampling.temperature == 0.3 and app.cfg.sampling.top_k == 20
        assert app.cfg.sampling.seed == 42 and app.cfg.sampling.stop == ["User:", "###"]
        stored = config_mod.load()
        assert stored.sampling.temperature == 0.3 and stored.sampling.top_k == 20
        assert stored.sampling.seed == 42 and stored.sampling.stop == ["User:", "###"]
        assert writes == [get_paths().config_file]  # all changes in one atomic write

        await pilot.press("f3")  # reopened, the stop strings read back as typed
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), "the settings screen again")
        assert app.screen.query_one(f"#{field_id('sampling.stop')}", Input).value == "User:,###"
        await pilot.press("escape")


async def test_help_theme_and_engine_errors(registered_model: Path) -> None:
    from tui.keys import COMMANDS
    from tui.screens.help import HelpScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        text = app.screen.query_one("#help-text").source
        for command in COMMANDS:
            assert command.title in text and (command.label or "palette only") in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.chat_screen, "help to close")
        palette = {command.title for command in app.get_system_commands(app.chat_screen)}
        assert {command.title for command in COMMANDS} <= palette

        assert app.theme == "textual-dark"
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: get_paths().config_file.exists(), "the theme to be saved")
        assert app.theme == "textual-light"

        # A message too long for the context: the engine's EdgeAIError shows in the chat...
        screen = app.chat_screen
        screen.prompt.text = "word " * 1500
        screen.prompt.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.chat_log.query("ErrorView") and not screen.generating, "the error")
        assert "context" in screen.chat_log.query_one("ErrorView").text
        # ...and the app keeps working: retry after editing the message.
        await pilot.press("ctrl+l")
        assert screen.prompt.text.startswith("word word")
        screen.prompt.clear()
        done = await send(pilot, "Hi")
        assert screen.chat_log.views()[-1].text == done.text and not screen.chat_log.query("ErrorView")

    from edge_ai import config as config_mod

    app = make_app(config_mod.load({"model.threads": 1, "model.context": 1024}))
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "textual-light"


async def test_model_that_cannot_load_is_reported(edge_home: Path) -> None:
    app = make_app(make_cfg(**{"model.name": "no-such-model"}))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat_screen
        await wait_for(pilot, lambda: "no model" in screen.status.state, "the load failure")
        screen.prompt.text = "Hello?"
        screen.prompt.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.chat_log.query("ErrorView") and not screen.generating, "the error")
        assert "unknown model 'no-such-model'" in screen.chat_log.query_one("ErrorView").text
        assert [v.role for v in screen.chat_log.views()] == ["user"]  # the message itself is kept


async def test_model_picker_marks_a_user_model_whose_file_is_gone(edge_home: Path, model_path: Path,
                                                                  tmp_path: Path) -> None:
    from textual.widgets import OptionList

    from edge_ai import registry
    from tui.screens.model_picker import ModelPickerScreen

    link = tmp_path / "gone.gguf"
    link.symlink_to(model_path)
    registry.add(link, name="gone")
    link.unlink()  # the file the user registered was deleted since
    app = make_app(make_cfg(**{"model.name": "gone"}))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.chat_screen
        await wait_for(pilot, lambda: "no model" in screen.status.state, "the load failure")
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen), "the model picker")
        picker = app.screen
        options = picker.query_one(OptionList)
        prompts = {options.get_option_at_index(i).id: (str(options.get_option_at_index(i).prompt),
                                                       options.get_option_at_index(i).disabled)
                   for i in range(options.option_count)}
        gone_text, gone_disabled = prompts["gone"]
        assert f"file missing: {link}" in gone_text and "assembled" not in gone_text and gone_disabled
        package_text, package_disabled = prompts["gemma3-270m"]  # not assembled yet in this home
        assert "assembled on first use" in package_text and not package_disabled
        assert "edge-ai models rm" in str(picker.query_one("#models-note").render())
        # Selecting the missing model does nothing; the picker stays open.
        options.highlighted = [e.name for e in picker.entries].index("gone")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is picker
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, "the picker to close")
    assert "no longer exists" in str(app.engines.error)


async def test_system_prompt_context_and_threads_from_settings(registered_model: Path) -> None:
    """The configured system prompt reaches the reopened conversation; Settings asks before changing
    one that has turns; context and threads reload the model with the new values."""
    from textual.widgets import Checkbox, Input, TextArea

    from tui.screens.settings import SettingsScreen, field_id

    with HistoryStore(get_paths().history_db) as store:
        old = store.create_conversation("Old chat", system_prompt="Talk like a pirate.")
        store.add_message(old.id, "user", "Hi")
        store.add_message(old.id, "assistant", "Arr!")
    app = make_app(make_cfg(**{"chat.system_prompt": "Answer in French."}))
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        screen = app.chat_screen
        assert screen.conversation.id == old.id  # reopened, and now with the configured prompt
        assert screen.engine_messages()[0] == {"role": "system", "content": "Answer in French."}

        async def change_settings(prompt: str, apply: bool | None, **fields: str) -> SettingsScreen:
            await pilot.press("f3")
            await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen), "the settings screen")
            settings = app.screen
            settings.query_one(f"#{field_id('chat.system_prompt')}", TextArea).text = prompt
            boxes = settings.query("#apply-system-prompt")
            assert bool(boxes) is (apply is not None)  # asked only when the conversation has turns
            if apply is not None:
                boxes.first(Checkbox).value = apply
            for key, value in fields.items():
                settings.query_one(f"#{field_id(key)}", Input).value = value
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: app.screen is screen, "the settings screen to close")
            return settings

        await change_settings("Answer in German.", apply=False)
        assert screen.engine_messages()[0]["content"] == "Answer in French."  # kept, as chosen
        await change_settings("Answer in Spanish.", apply=True)
        assert screen.engine_messages()[0]["content"] == "Answer in Spanish."
        with HistoryStore(get_paths().history_db) as store:
            assert store.get_conversation(old.id).system_prompt == "Answer in Spanish."

        await pilot.press("ctrl+n")  # a conversation that has not started takes the new prompt
        await wait_for(pilot, lambda: screen.conversation is None, "a new chat")
        await change_settings("Answer in Dutch.", apply=None, **{"model.context": "768", "model.threads": "2"})
        await wait_for(pilot, lambda: app.engines.engine is not None and app.engines.engine.n_ctx == 768
                       and app.engine_state == "ready", "the model reloaded with the new context")
        assert app.engines.engine.threads == 2 and screen.status.context_size == 768
        await send(pilot, "Hi")
        assert screen.conversation.system_prompt == "Answer in Dutch."
        assert screen.engine_messages()[0]["content"] == "Answer in Dutch."

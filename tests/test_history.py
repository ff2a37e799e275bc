"""Tests for the conversation history store (edge_ai.history)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge_ai.errors import EdgeAIError
from edge_ai.history import Conversation, HistoryStore, Message

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


@pytest.fixture
def store(db_path: Path):
    with HistoryStore(db_path) as s:
        yield s


def fts_consistent(path: Path) -> bool:
    """FTS5's own check that the indexes match the rows they index (raises if not)."""
    conn = sqlite3.connect(path)
    try:
        for table in ("messages_fts", "titles_fts"):
            conn.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")
        return True
    finally:
        conn.close()


def test_open_configures_database(store: HistoryStore, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_create_list_get_rename(store: HistoryStore) -> None:
    first = store.create_conversation()
    second = store.create_conversation("Plans", model="gemma", system_prompt="Be brief.")
    assert (first.title, first.model, first.system_prompt) == ("New chat", "", "")
    assert first.created == first.updated
    assert store.get_conversation(second.id) == second
    assert [c.id for c in store.list_conversations()] == [second.id, first.id]

    store.add_message(first.id, "user", "hi")  # activity moves it to the top
    assert [c.id for c in store.list_conversations()] == [first.id, second.id]

    renamed = store.rename(second.id, "Weekend plans")
    assert renamed.title == "Weekend plans"
    assert renamed.updated == second.updated  # renaming does not reorder the sidebar
    assert store.get_conversation(second.id).title == "Weekend plans"


def test_delete_cascades_to_messages(store: HistoryStore, db_path: Path) -> None:
    keep = store.create_conversation("keep")
    gone = store.create_conversation("gone")
    store.add_message(keep.id, "user", "kept words")
    store.add_message(gone.id, "user", "doomed words")
    store.add_message(gone.id, "assistant", "also doomed")

    store.delete(gone.id)

    assert [c.id for c in store.list_conversations()] == [keep.id]
    count = store._conn.execute("SELECT count(*) FROM messages WHERE conversation_id = ?", (gone.id,)).fetchone()[0]
    assert count == 0
    assert store.search("doomed") == []
    assert [c.id for c, _ in store.search("words")] == [keep.id]
    assert fts_consistent(db_path)


def test_unknown_ids_raise_edge_ai_error(store: HistoryStore) -> None:
    conv = store.create_conversation()
    for call in (
        lambda: store.get_conversation(999),
        lambda: store.rename(999, "x"),
        lambda: store.delete(999),
        lambda: store.add_message(999, "user", "x"),
        lambda: store.messages(999),
        lambda: store.update_message(999, "x"),
        lambda: store.delete_messages_from(conv.id, 999),
        lambda: store.export_markdown(999),
        lambda: store.export_json(999),
    ):
        with pytest.raises(EdgeAIError, match="999"):
            call()


def test_bad_role_is_rejected(store: HistoryStore) -> None:
    conv = store.create_conversation()
    with pytest.raises(ValueError, match="role"):
        store.add_message(conv.id, "tool", "x")


def test_messages_in_order_and_bump_updated(store: HistoryStore) -> None:
    conv = store.create_conversation()
    added = [store.add_message(conv.id, role, f"m{i}") for i, role in enumerate(["system", "user", "assistant", "user"])]
    assert store.messages(conv.id) == added
    assert [m.content for m in added] == ["m0", "m1", "m2", "m3"]
    assert all(m.conversation_id == conv.id and m.metrics is None for m in added)
    assert store.get_conversation(conv.id).updated >= added[-1].created


def test_update_message_streaming_then_metrics(store: HistoryStore, db_path: Path) -> None:
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "tell me about owls")
    reply = store.add_message(conv.id, "assistant", "")
    store.update_message(reply.id, "Owls are")
    metrics = {"tokens": 42, "tokens_per_second": 18.5, "model": "gemma"}
    done = store.update_message(reply.id, "Owls are nocturnal birds.", metrics)
    assert done.content == "Owls are nocturnal birds." and done.metrics == metrics
    # metrics=None keeps what was recorded
    again = store.update_message(reply.id, "Owls are nocturnal raptors.")
    assert again.metrics == metrics
    assert store.messages(conv.id)[-1] == again
    assert [c.id for c, _ in store.search("raptors")] == [conv.id]
    assert store.search("birds") == []
    assert fts_consistent(db_path)


def test_delete_messages_from(store: HistoryStore, db_path: Path) -> None:
    conv = store.create_conversation()
    other = store.create_conversation()
    msgs = [store.add_message(conv.id, "user" if i % 2 == 0 else "assistant", f"turn {i}") for i in range(5)]
    other_msg = store.add_message(other.id, "user", "untouched")

    store.delete_messages_from(conv.id, msgs[3].id)
    assert store.messages(conv.id) == msgs[:3]
    assert store.messages(other.id) == [other_msg]

    with pytest.raises(EdgeAIError):  # a message of another conversation
        store.delete_messages_from(conv.id, other_msg.id)
    with pytest.raises(EdgeAIError):  # already deleted
        store.delete_messages_from(conv.id, msgs[4].id)

    # ids are never reused, so a late update aimed at a deleted reply cannot hit its replacement
    replacement = store.add_message(conv.id, "assistant", "new reply")
    assert replacement.id > msgs[4].id
    with pytest.raises(EdgeAIError):
        store.update_message(msgs[4].id, "stale stream chunk")
    assert store.messages(conv.id)[-1].content == "new reply"
    assert fts_consistent(db_path)


def test_search_messages_and_titles(store: HistoryStore) -> None:
    trip = store.create_conversation("Trip to Lisbon")
    code = store.create_conversation("Refactoring")
    store.add_message(trip.id, "user", "Where should I eat pastel de nata?")
    store.add_message(code.id, "user", "How do I split a Python module into packages?")
    store.add_message(code.id, "assistant", "Move related functions into a package directory.")

    (hit, snippet), = store.search("lisbon")
    assert hit == store.get_conversation(trip.id) and snippet == "Trip to Lisbon"

    (hit, snippet), = store.search("nata")
    assert hit.id == trip.id and "pastel de nata" in snippet

    (hit, _), = store.search("pack")  # prefix match, one result per conversation
    assert hit.id == code.id
    assert [c.id for c, _ in store.search("python module")] == [code.id]
    assert store.search("python lisbon") == []
    assert store.search("zebra") == []


def test_search_limit_keeps_best_hits_and_store_usable(store: HistoryStore) -> None:
    convs = [store.create_conversation(f"chat {i}") for i in range(5)]
    for conv in convs:
        store.add_message(conv.id, "user", "common word")
    assert len(store.search("common", limit=2)) == 2  # stops reading the cursor early
    assert len(store.search("common")) == 5
    store.add_message(convs[0].id, "user", "the read transaction was closed cleanly")


@pytest.mark.parametrize("query", ['"', "foo*", "a:b", "NOT", "(", ")", "AND", "OR x", "-x", "^", "NEAR(a b)",
                                   'title:"x', "*", "a AND", "'; DROP TABLE messages; --"])
def test_search_survives_hostile_queries(store: HistoryStore, query: str) -> None:
    conv = store.create_conversation("Notes")
    store.add_message(conv.id, "user", 'foo:bar "quoted" NOT (paren) a:b x-ray')
    result = store.search(query)
    assert isinstance(result, list)
    assert store.messages(conv.id)  # nothing was damaged


def test_search_hostile_words_still_match_literally(store: HistoryStore) -> None:
    conv = store.create_conversation("Notes")
    store.add_message(conv.id, "user", "please do NOT touch foo:bar")
    assert [c.id for c, _ in store.search("NOT")] == [conv.id]
    assert [c.id for c, _ in store.search("foo:bar")] == [conv.id]
    assert [c.id for c, _ in store.search('"foo*')] == [conv.id]


@pytest.mark.parametrize("query", ["", "   ", "\n\t", '"', "*", "(", "-"])
def test_search_without_words_returns_nothing(store: HistoryStore, query: str) -> None:
    conv = store.create_conversation("Anything")
    store.add_message(conv.id, "user", "anything")
    assert store.search(query) == []


def test_reopen_restores_everything_exactly(db_path: Path) -> None:
    with HistoryStore(db_path) as store:
        a = store.create_conversation("Alpha ünïcode ✓", model="gemma-3-270m", system_prompt="You are terse.")
        b = store.create_conversation("Beta")
        store.add_message(a.id, "system", "sys")
        store.add_message(a.id, "user", "line one\nline two\n\n```py\nprint('x')\n```")
        reply = store.add_message(a.id, "assistant", "partial")
        store.update_message(reply.id, "final", {"tokens": 3, "ttft_s": 0.123456789, "nested": {"k": [1, 2]}})
        store.add_message(b.id, "user", "b message")
        before = store.list_conversations()
        before_messages = {c.id: store.messages(c.id) for c in before}
        before_search = store.search("final")

    with HistoryStore(db_path) as store:
        assert store.list_conversations() == before
        assert {c.id: store.messages(c.id) for c in before} == before_messages
        assert store.search("final") == before_search


def test_export_markdown(store: HistoryStore) -> None:
    conv = store.create_conversation("Owl facts", system_prompt="Answer briefly.")
    store.add_message(conv.id, "user", "What do owls eat?")
    store.add_message(conv.id, "assistant", "Mostly small mammals.", {"tokens": 5})
    assert store.export_markdown(conv.id) == (
        "# Owl facts\n\n"
        "## System\n\nAnswer briefly.\n\n"
        "## User\n\nWhat do owls eat?\n\n"
        "## Assistant\n\nMostly small mammals.\n"
    )


def test_export_json(store: HistoryStore) -> None:
    conv = store.create_conversation("Owl facts", model="gemma")
    q = store.add_message(conv.id, "user", "What do owls eat?")
    a = store.add_message(conv.id, "assistant", "Mice.", {"tokens": 2})
    text = store.export_json(conv.id)
    data = json.loads(text)
    assert list(data) == ["conversation", "messages"]
    assert data["conversation"] == {
        "id": conv.id, "title": "Owl facts", "model": "gemma", "system_prompt": "",
        "created": conv.created, "updated": store.get_conversation(conv.id).updated,
    }
    assert [Message(**m) for m in data["messages"]] == [q, a]
    assert list(data["messages"][0]) == sorted(data["messages"][0])  # stable key order
    assert text == store.export_json(conv.id)


def test_corrupt_file_raises_edge_ai_error(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is definitely not an sqlite database" * 200)
    with pytest.raises(EdgeAIError, match="corrupt") as info:
        HistoryStore(path)
    message = str(info.value)
    assert str(path) in message and "move it aside" in message and "\n" not in message


def test_unwritable_directory_raises_edge_ai_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")  # a file where the data directory should be blocks even root
    path = not_a_dir / "data" / "history.sqlite3"
    with pytest.raises(EdgeAIError) as info:
        HistoryStore(path)
    message = str(info.value)
    assert str(not_a_dir) in message and "writable" in message and "\n" not in message


def test_database_path_is_a_directory_raises_edge_ai_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeAIError, match="cannot open history database"):
        HistoryStore(tmp_path)


def test_newer_schema_is_refused(db_path: Path) -> None:
    HistoryStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(EdgeAIError, match="newer edge-ai"):
        HistoryStore(db_path)


def test_failed_write_rolls_back_and_store_stays_usable(store: HistoryStore) -> None:
    conv = store.create_conversation()
    store.add_message(conv.id, "user", "kept")
    before = store.get_conversation(conv.id)
    with pytest.raises(EdgeAIError):
        with store._write() as conn:  # a write that fails half-way must leave no trace
            conn.execute("UPDATE conversations SET title = 'half' WHERE id = ?", (conv.id,))
            conn.execute("INSERT INTO messages (conversation_id, role, content, created) VALUES (?, 'bogus', 'x', 0)",
                         (conv.id,))
    assert store.get_conversation(conv.id) == before
    assert [m.content for m in store.messages(conv.id)] == ["kept"]
    store.add_message(conv.id, "assistant", "still works")


def test_concurrent_threads(store: HistoryStore) -> None:
    conv = store.create_conversation()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                m = store.add_message(conv.id, "user", f"t{n} m{i}")
                store.update_message(m.id, f"t{n} m{i} done")
                store.list_conversations()
                store.search(f"t{n}")
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    messages = store.messages(conv.id)
    assert len(messages) == 100 and all(m.content.endswith("done") for m in messages)


CHILD = textwrap.dedent(
    """
    import sys
    from edge_ai.history import HistoryStore

    store = HistoryStore(sys.argv[1])
    conv = store.create_conversation("crash test")
    print(conv.id, flush=True)
    i = 0
    while True:  # write until killed, like a reply streaming when the laptop dies
        msg = store.add_message(conv.id, "assistant", "")
        store.update_message(msg.id, f"message {i} " + "x" * 4000, {"i": i})
        print(i, flush=True)
        i += 1
    """
)


def test_survives_sigkill_mid_write(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        conv_id = int(child.stdout.readline())
        last_done = -1
        while last_done < 200:
            line = child.stdout.readline()
            assert line, "child exited before it was killed"
            last_done = int(line)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert fts_consistent(db_path)

    with HistoryStore(db_path) as store:
        messages = store.messages(conv_id)
        completed = messages[: last_done + 1]
        assert len(completed) == last_done + 1
        for i, m in enumerate(completed):
            assert m.content == f"message {i} " + "x" * 4000 and m.metrics == {"i": i}
        # anything after the last reported message is either fully written or an empty placeholder
        for m in messages[last_done + 1:]:
            assert m.content == "" or m.content.startswith("message ")
        store.add_message(conv_id, "user", "life goes on")


def test_conversation_dataclass_is_frozen() -> None:
    conv = Conversation(1, "t", "", "", 0.0, 0.0)
    with pytest.raises(AttributeError):
        conv.title = "x"  # type: ignore[misc]


def test_message_vectors_follow_their_text(store: HistoryStore) -> None:
    conv = store.create_conversation()
    first = store.add_message(conv.id, "user", "water the tomatoes")
    reply = store.add_message(conv.id, "assistant", "I will")
    store.add_message(conv.id, "assistant", "  ")  # nothing to embed
    assert store.messages_without_vector("m") == [(first.id, "water the tomatoes"), (reply.id, "I will")]
    # a vector is kept only for the text it was computed from: the reply grew meanwhile
    store.update_message(reply.id, "I will remind you")
    assert store.store_vectors("m", [(first.id, "water the tomatoes", b"\x01" * 8), (reply.id, "I will", b"\x02" * 8)]) == 1
    assert store.vectors("m") == [(first.id, conv.id, b"\x01" * 8)]
    assert store.messages_without_vector("m") == [(reply.id, "I will remind you")]
    assert store.messages_without_vector("other-model", limit=1) == [(first.id, "water the tomatoes")]
    before = store.vectors_version("m")
    store.update_message(first.id, "water the roses")  # an edit drops the stale vector
    assert store.vectors("m") == [] and store.vectors_version("m") != before
    store.store_vectors("m", [(first.id, "water the roses", b"\x03" * 8)])
    hits = store.messages_by_id([first.id, 10**6])
    assert list(hits) == [first.id] and hits[first.id][0].id == conv.id and hits[first.id][1].content == "water the roses"
    store.delete(conv.id)  # cascade
    assert store.vectors("m") == [] and store.vectors_version("m") == (0, 0)


def test_version_1_database_gains_the_vector_table(db_path: Path) -> None:
    with HistoryStore(db_path) as store:
        conv = store.create_conversation("old")
        store.add_message(conv.id, "user", "kept")
    conn = sqlite3.connect(db_path)
    conn.executescript("DROP TRIGGER message_vectors_stale; DROP TABLE message_vectors; PRAGMA user_version=1;")
    conn.close()
    with HistoryStore(db_path) as store:
        assert [m.content for m in store.messages(conv.id)] == ["kept"]
        assert store.messages_without_vector("m") == [(store.messages(conv.id)[0].id, "kept")]

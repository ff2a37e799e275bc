"""Conversation history: the SQLite store behind the terminal app's sidebar.

One database file (normally `get_paths().history_db`) holds conversations and their messages.
Chats are what users would be most upset to lose, so the store is built to survive crashes:

* WAL journal with `synchronous=NORMAL`: a killed process never corrupts the file, and a power cut
  can at worst lose the last few commits, never half of one.
* Every write is a single `BEGIN IMMEDIATE ... COMMIT` transaction, so a message and the
  conversation's `updated` stamp change together or not at all.
* The schema is versioned with `PRAGMA user_version` and upgraded in a transaction on open.

Full-text search uses two external-content FTS5 indexes (message text and conversation titles)
kept in sync by triggers, so every insert, edit, delete and cascade updates them in the same
transaction as the row itself.

The TUI calls the store from its event-loop thread and from worker threads, so the connection is
shared (`check_same_thread=False`) and every operation holds one internal lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_ai.errors import EdgeAIError, NotFoundError

ROLES = ("system", "user", "assistant")

# One entry per schema version; entry N-1 upgrades version N-1 to N. Never edit a released entry:
# append a new one instead, so existing databases upgrade step by step.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # AUTOINCREMENT so an id is never reused: a late streaming update aimed at a message that
        # retry deleted must fail rather than overwrite the reply that replaced it.
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            title TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            system_prompt TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL
        )""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            created REAL NOT NULL,
            metrics TEXT
        )""",
        "CREATE INDEX messages_by_conversation ON messages(conversation_id, id)",
        "CREATE INDEX conversations_by_updated ON conversations(updated DESC, id DESC)",
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id')",
        "CREATE VIRTUAL TABLE titles_fts USING fts5(title, content='conversations', content_rowid='id')",
        """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        END""",
        """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        END""",
        """CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
        END""",
        """CREATE TRIGGER titles_fts_insert AFTER INSERT ON conversations BEGIN
            INSERT INTO titles_fts(rowid, title) VALUES (new.id, new.title);
        END""",
        """CREATE TRIGGER titles_fts_delete AFTER DELETE ON conversations BEGIN
            INSERT INTO titles_fts(titles_fts, rowid, title) VALUES ('delete', old.id, old.title);
        END""",
        """CREATE TRIGGER titles_fts_update AFTER UPDATE OF title ON conversations BEGIN
            INSERT INTO titles_fts(titles_fts, rowid, title) VALUES ('delete', old.id, old.title);
            INSERT INTO titles_fts(rowid, title) VALUES (new.id, new.title);
        END""",
    ),
    (
        # Sentence embeddings for search by meaning, one per message and embedding model, computed
        # lazily by the app. A message whose text changes (a reply growing, an edit) loses its
        # vector in the same transaction, so a vector always describes the text it sits beside.
        """CREATE TABLE message_vectors (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (message_id, model)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER message_vectors_stale AFTER UPDATE OF content ON messages BEGIN
            DELETE FROM message_vectors WHERE message_id = old.id;
        END""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Column lists in dataclass field order; queries alias the tables as `c` and `m`.
_CONVERSATION_COLUMNS = "c.id, c.title, c.model, c.system_prompt, c.created, c.updated"
_MESSAGE_COLUMNS = "m.id, m.conversation_id, m.role, m.content, m.created, m.metrics"


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str
    system_prompt: str
    created: float
    updated: float


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    created: float
    metrics: dict[str, Any] | None


def _conversation(row: tuple[Any, ...]) -> Conversation:
    return Conversation(*row)


def _message(row: tuple[Any, ...]) -> Message:
    *fields, metrics = row
    return Message(*fields, metrics=None if metrics is None else json.loads(metrics))


def _metrics_json(metrics: dict[str, Any] | None) -> str | None:
    return None if metrics is None else json.dumps(metrics, sort_keys=True)


def fts_query(text: str) -> str:
    """Turn free user text into a safe FTS5 query: every word a quoted prefix term, all required.

    Quoting (with `"` doubled) makes FTS5 operators such as `AND`, `NOT`, `*`, `-`, `:` and `(`
    plain text, so no input can raise a syntax error. Words without a letter or digit are dropped
    because the tokenizer would reduce them to an empty phrase that matches nothing. Prefix terms
    let the sidebar show results while a word is still being typed. Returns "" if nothing is left.
    """
    words = [w for w in text.split() if any(ch.isalnum() for ch in w)]
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words)


class HistoryStore:
    """Conversations and messages in one SQLite file; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = self._open()

    # -- opening -----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """Connect, configure and migrate; every failure becomes one EdgeAIError line."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EdgeAIError(
                f"cannot create the history directory {self.path.parent} ({exc.strerror}); "
                "make it writable or set EDGE_AI_HOME to a writable folder"
            ) from exc
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so each operation is exactly one
        # transaction, instead of the sqlite3 module's implicit ones.
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        try:
            self._configure(conn)
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._error(exc) from exc
        except EdgeAIError:
            conn.close()
            raise
        return conn

    @staticmethod
    def _configure(conn: sqlite3.Connection) -> None:
        # These pragmas are per connection and cannot run inside a transaction.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the schema up to SCHEMA_VERSION in one transaction.

        The version is read inside the write lock so two processes opening a new file at once do
        not both try to create the tables.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise EdgeAIError(
                    f"history database {self.path} was written by a newer edge-ai (schema "
                    f"{version}, this one knows {SCHEMA_VERSION}); upgrade edge-ai"
                )
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def _error(self, exc: sqlite3.DatabaseError) -> EdgeAIError:
        """Translate an SQLite failure into a one-line message naming the file and the fix."""
        reason = str(exc)
        if "not a database" in reason or "malformed" in reason:
            return EdgeAIError(
                f"history database {self.path} is corrupt ({reason}); "
                "move it aside to start a new history"
            )
        if "unable to open" in reason or "readonly" in reason or "read-only" in reason:
            return EdgeAIError(
                f"cannot open history database {self.path} for writing ({reason}); "
                "make the file and its folder writable or set EDGE_AI_HOME to a writable folder"
            )
        return EdgeAIError(
            f"history database {self.path} failed ({reason}); "
            "check free disk space and that no other edge-ai is holding it"
        )

    # -- transactions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, mode: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run the block as one transaction, rolled back on any error.

        Writes use IMMEDIATE so the write lock is taken up front (no deadlock-prone upgrade from a
        read lock); reads use DEFERRED so multi-query reads see one consistent snapshot.
        """
        with self._lock:
            conn = self._conn
            try:
                conn.execute(f"BEGIN {mode}")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except sqlite3.ProgrammingError:
                raise  # misuse such as a closed store is a bug, not a database problem
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._transaction("IMMEDIATE")

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._transaction("DEFERRED")

    # -- conversations -------------------------------------------------------------------------

    def create_conversation(self, title: str = "New chat", model: str = "",
                            system_prompt: str = "") -> Conversation:
        now = time.time()
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO conversations (title, model, system_prompt, created, updated) VALUES (?, ?, ?, ?, ?)",
                (title, model, system_prompt, now, now),
            )
            return self._get_conversation(conn, cursor.lastrowid)

    def list_conversations(self) -> list[Conversation]:
        """All conversations, most recently active first (the sidebar's order)."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c ORDER BY c.updated DESC, c.id DESC"
            ).fetchall()
        return [_conversation(r) for r in rows]

    def get_conversation(self, conversation_id: int) -> Conversation:
        """The conversation; raises EdgeAIError if it does not exist (e.g. deleted elsewhere)."""
        with self._read() as conn:
            return self._get_conversation(conn, conversation_id)

    @staticmethod
    def _get_conversation(conn: sqlite3.Connection, conversation_id: int) -> Conversation:
        row = conn.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = ?", (conversation_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no conversation with id {conversation_id} in the history; it may have been deleted")
        return _conversation(row)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        """Change the title only; `updated` is left alone so renaming does not reorder the sidebar."""
        with self._write() as conn:
            self._get_conversation(conn, conversation_id)
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
            return self._get_conversation(conn, conversation_id)

    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> Conversation:
        """Change the system prompt the conversation's next replies use (its messages stay)."""
        with self._write() as conn:
            self._get_conversation(conn, conversation_id)
            conn.execute("UPDATE conversations SET system_prompt = ? WHERE id = ?", (system_prompt, conversation_id))
            return self._get_conversation(conn, conversation_id)

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation; its messages go with it (ON DELETE CASCADE)."""
        with self._write() as conn:
            self._get_conversation(conn, conversation_id)
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    @staticmethod
    def _touch(conn: sqlite3.Connection, conversation_id: int) -> None:
        conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conversation_id))

    # -- messages ------------------------------------------------------------------------------

    def add_message(self, conversation_id: int, role: str, content: str,
                    metrics: dict[str, Any] | None = None) -> Message:
        """Append a message and mark the conversation as just active."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        with self._write() as conn:
            self._get_conversation(conn, conversation_id)
            cursor = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, created, metrics) VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, time.time(), _metrics_json(metrics)),
            )
            self._touch(conn, conversation_id)
            return self._get_message(conn, cursor.lastrowid)

    def update_message(self, message_id: int, content: str,
                       metrics: dict[str, Any] | None = None) -> Message:
        """Replace a message's text, e.g. as a streamed reply grows.

        `metrics=None` keeps the stored metrics, so partial updates during streaming cannot wipe
        numbers that were already recorded; pass a dict when the reply finishes.
        """
        with self._write() as conn:
            message = self._get_message(conn, message_id)
            conn.execute(
                "UPDATE messages SET content = ?, metrics = coalesce(?, metrics) WHERE id = ?",
                (content, _metrics_json(metrics), message_id),
            )
            self._touch(conn, message.conversation_id)
            return self._get_message(conn, message_id)

    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Delete `message_id` and every later message of the conversation (retry / edit last)."""
        with self._write() as conn:
            if self._get_message(conn, message_id).conversation_id != conversation_id:
                raise EdgeAIError(f"message {message_id} is not part of conversation {conversation_id}")
            conn.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conversation_id, message_id))
            self._touch(conn, conversation_id)

    def messages(self, conversation_id: int) -> list[Message]:
        """The conversation's messages in the order they were added."""
        with self._read() as conn:
            self._get_conversation(conn, conversation_id)
            return self._messages(conn, conversation_id)

    @staticmethod
    def _messages(conn: sqlite3.Connection, conversation_id: int) -> list[Message]:
        rows = conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = ? ORDER BY m.id",
            (conversation_id,),
        ).fetchall()
        return [_message(r) for r in rows]

    @staticmethod
    def _get_message(conn: sqlite3.Connection, message_id: int) -> Message:
        row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?", (message_id,)).fetchone()
        if row is None:
            raise EdgeAIError(f"no message with id {message_id} in the history; it may have been deleted")
        return _message(row)

    # -- search --------------------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[tuple[Conversation, str]]:
        """Conversations whose title, or one of whose messages, contains every word of `query`.

        Words match as prefixes, so results appear while the last word is still being typed.

        One result per conversation with a plain-text snippet: the title for title matches
        (listed first, being the strongest signal), else the best-ranked message excerpt.
        Any user text is safe (see `fts_query`); a query with no words returns [].
        """
        match = fts_query(query)
        if not match:
            return []
        with self._read() as conn:
            title_hits = conn.execute(
                f"SELECT {_CONVERSATION_COLUMNS}, c.title FROM titles_fts "
                "JOIN conversations c ON c.id = titles_fts.rowid "
                "WHERE titles_fts MATCH ? ORDER BY bm25(titles_fts), c.updated DESC",
                (match,),
            )
            message_hits = conn.execute(
                f"SELECT {_CONVERSATION_COLUMNS}, snippet(messages_fts, 0, '', '', '…', 12) FROM messages_fts "
                "JOIN messages m ON m.id = messages_fts.rowid "
                "JOIN conversations c ON c.id = m.conversation_id "
                "WHERE messages_fts MATCH ? ORDER BY bm25(messages_fts), c.updated DESC",
                (match,),
            )
            return _first_per_conversation(itertools.chain(title_hits, message_hits), limit)

    # -- vectors (search by meaning) -------------------------------------------------------------

    def messages_without_vector(self, model: str, limit: int = 64) -> list[tuple[int, str]]:
        """(id, content) of up to `limit` user and assistant messages with text and no `model` vector yet."""
        with self._read() as conn:
            return conn.execute(
                "SELECT m.id, m.content FROM messages m WHERE m.role != 'system' AND trim(m.content) != '' "
                "AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_id = m.id AND v.model = ?) "
                "ORDER BY m.id LIMIT ?",
                (model, limit),
            ).fetchall()

    def store_vectors(self, model: str, vectors: Iterable[tuple[int, str, bytes]]) -> int:
        """Store `(message id, the text embedded, vector)` rows; returns how many were kept.

        A row is kept only if the message still exists with exactly that text: a reply that grew or
        a message that was edited or deleted while it was being embedded is skipped (and embedded
        again later), so no vector outlives or mislabels its text.
        """
        stored = 0
        with self._write() as conn:
            for message_id, content, vector in vectors:
                stored += conn.execute(
                    "INSERT OR REPLACE INTO message_vectors (message_id, model, vector) "
                    "SELECT id, ?, ? FROM messages WHERE id = ? AND content = ?",
                    (model, vector, message_id, content),
                ).rowcount
        return stored

    def vectors_version(self, model: str) -> tuple[int, int]:
        """A cheap fingerprint of `model`'s stored vectors (count, sum of ids) that changes when they do."""
        with self._read() as conn:
            return conn.execute(
                "SELECT count(*), coalesce(sum(message_id), 0) FROM message_vectors WHERE model = ?", (model,)
            ).fetchone()

    def vectors(self, model: str) -> list[tuple[int, int, bytes]]:
        """(message id, conversation id, vector) of every message embedded by `model`."""
        with self._read() as conn:
            return conn.execute(
                "SELECT v.message_id, m.conversation_id, v.vector FROM message_vectors v "
                "JOIN messages m ON m.id = v.message_id WHERE v.model = ? ORDER BY v.message_id",
                (model,),
            ).fetchall()

    def messages_by_id(self, message_ids: Iterable[int]) -> dict[int, tuple[Conversation, Message]]:
        """The messages still present among `message_ids`, each with its conversation."""
        ids = list(message_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_CONVERSATION_COLUMNS}, {_MESSAGE_COLUMNS} FROM messages m "
                f"JOIN conversations c ON c.id = m.conversation_id WHERE m.id IN ({marks})",
                ids,
            ).fetchall()
        width = len(_CONVERSATION_COLUMNS.split(","))
        return {row[width]: (_conversation(row[:width]), _message(row[width:])) for row in rows}

    # -- export --------------------------------------------------------------------------------

    def export_markdown(self, conversation_id: int) -> str:
        """The conversation as Markdown: title heading, then one role heading per message."""
        conversation, messages = self._snapshot(conversation_id)
        parts = [f"# {conversation.title}"]
        if conversation.system_prompt:
            parts.append(f"## System\n\n{conversation.system_prompt}")
        parts += [f"## {m.role.capitalize()}\n\n{m.content}" for m in messages]
        return "\n\n".join(parts) + "\n"

    def export_json(self, conversation_id: int) -> str:
        """The conversation and its messages (with metrics) as JSON with sorted, stable keys."""
        conversation, messages = self._snapshot(conversation_id)
        document = {
            "conversation": dataclasses.asdict(conversation),
            "messages": [dataclasses.asdict(m) for m in messages],
        }
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def _snapshot(self, conversation_id: int) -> tuple[Conversation, list[Message]]:
        """Conversation and messages read in one transaction, so an export is self-consistent."""
        with self._read() as conn:
            return self._get_conversation(conn, conversation_id), self._messages(conn, conversation_id)

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL into the main file). Idempotent."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (SQLite may already have rolled back on error)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _first_per_conversation(rows: Iterable[tuple[Any, ...]], limit: int) -> list[tuple[Conversation, str]]:
    """Keep each conversation's first (best) hit, in order, up to `limit` results.

    `rows` may be live cursors: stopping at `limit` skips fetching (and snippeting) the rest.
    """
    results: dict[int, tuple[Conversation, str]] = {}
    for *fields, snippet in rows:
        conversation = _conversation(tuple(fields))
        results.setdefault(conversation.id, (conversation, snippet))
        if len(results) == limit:
            break
    return list(results.values())

"""The screen log of watch mode: redacted screen text in a local SQLite database with full-text search.

    log = ScreenLog.create(path, Retention(days=14, max_rows=50000))   # only watch mode creates it
    log.add(time.time(), "Terminal", redacted_text)                     # expired rows go on each write
    ScreenLog.open(path).search("error", limit=10)                      # -> [Hit(time, title, snippet)]

Screenpipe's log was readable by any local user and grew without bound. Here the database is
owner-only from its first byte: it is built in a 0600 temp file inside a 0700 folder and renamed
into place (never a moment with looser permissions or a half-made schema under the final name), and
SQLite gives its journal the database's permissions. Retention is enforced on every write, by age
and by row count, so the file stays bounded. Callers store text already redacted
(runtime.screen.redact) under a title already privacy-checked: this module stores what it is given.

Search reads the database read-only, so asking never creates a file.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_ai.errors import EdgeAIError, NotFoundError

FILE_MODE = 0o600
DIR_MODE = 0o700
SNIPPET_TOKENS = 12  # words around the match in a search snippet

SCHEMA = """
CREATE TABLE frames (id INTEGER PRIMARY KEY, time REAL NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX frames_time ON frames(time);
CREATE VIRTUAL TABLE frames_fts USING fts5(title, text, content='frames', content_rowid='id');
CREATE TRIGGER frames_ai AFTER INSERT ON frames BEGIN
  INSERT INTO frames_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
END;
CREATE TRIGGER frames_ad AFTER DELETE ON frames BEGIN
  INSERT INTO frames_fts(frames_fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
END;
"""


@dataclass(frozen=True)
class Retention:
    days: float = 14.0  # rows older than this are deleted
    max_rows: int = 50000  # beyond this many rows the oldest are deleted


@dataclass(frozen=True)
class Hit:
    time: float  # Unix time the change was seen
    title: str  # the active window's title ("" when it was private or there was none)
    snippet: str  # the matching words in context, matches in [brackets]


class ScreenLog:
    """One connection to the screen log; `create` for watch mode (writes), `open` for search (read-only)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, retention: Retention | None) -> None:
        self._conn = conn
        self.path = path
        self.retention = retention

    @classmethod
    def create(cls, path: Path, retention: Retention) -> ScreenLog:
        """Open the log for writing, creating it (owner-only, atomically) if it does not exist."""
        path = path.expanduser()
        _private_dir(path.parent)
        if not path.exists():
            _create_file(path)
        elif path.stat().st_mode & 0o077:
            os.chmod(path, FILE_MODE)  # made looser by hand or by an older copy: tighten before writing to it
        try:
            conn = sqlite3.connect(path, check_same_thread=False)
            conn.execute("SELECT count(*) FROM frames").fetchone()
        except sqlite3.DatabaseError as exc:
            raise EdgeAIError(f"{path} is not a screen log ({exc}); move it away or set screen.watch_db") from None
        return cls(conn, path, retention)

    @classmethod
    def open(cls, path: Path) -> ScreenLog:
        """Open an existing log read-only (searching never creates or changes a file)."""
        path = path.expanduser()
        if not path.exists():
            raise NotFoundError(f"no screen log at {path}; run `edge-ai screen watch` first (watch mode is opt-in)")
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            conn.execute("SELECT count(*) FROM frames").fetchone()
        except sqlite3.DatabaseError as exc:
            raise EdgeAIError(f"cannot read the screen log {path}: {exc}") from None
        return cls(conn, path, None)

    def __enter__(self) -> ScreenLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def add(self, when: float, title: str, text: str) -> int:
        """Store one screen change and apply the retention limits; returns the new row id."""
        with self._conn:
            row = self._conn.execute("INSERT INTO frames(time, title, text) VALUES (?, ?, ?)", (when, title, text))
            self._expire(when)
        return int(row.lastrowid or 0)

    def expire(self, now: float) -> int:
        """Delete the rows the retention limits exclude at `now`; returns how many went."""
        with self._conn:
            return self._expire(now)

    def _expire(self, now: float) -> int:
        if self.retention is None:
            raise EdgeAIError("the screen log was opened read-only; only watch mode writes to it")
        old = self._conn.execute("DELETE FROM frames WHERE time < ?", (now - self.retention.days * 86400,)).rowcount
        extra = self._conn.execute("DELETE FROM frames WHERE id IN (SELECT id FROM frames ORDER BY time DESC, id DESC "
                                   "LIMIT -1 OFFSET ?)", (self.retention.max_rows,)).rowcount
        return old + extra

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM frames").fetchone()[0])

    def rows(self) -> list[tuple[float, str, str]]:
        """Every stored (time, title, text), oldest first."""
        return list(self._conn.execute("SELECT time, title, text FROM frames ORDER BY time, id"))

    def search(self, query: str, limit: int = 10) -> list[Hit]:
        """Full-text search (FTS5 query syntax: words, "a phrase", prefix*, OR, NOT), best matches first."""
        if not query.strip():
            raise EdgeAIError("empty search; give a word or phrase to look for")
        if limit < 1:
            raise EdgeAIError(f"--limit {limit} must be at least 1")
        sql = ("SELECT f.time, f.title, snippet(frames_fts, 1, '[', ']', '...', ?) FROM frames_fts "
               "JOIN frames f ON f.id = frames_fts.rowid WHERE frames_fts MATCH ? ORDER BY rank LIMIT ?")
        try:
            rows = self._conn.execute(sql, (SNIPPET_TOKENS, query, limit)).fetchall()
        except sqlite3.OperationalError as exc:
            raise EdgeAIError(f"cannot search for {query!r}: {exc}; put words with punctuation in double quotes") from None
        return [Hit(float(t), str(title), str(snippet)) for t, title, snippet in rows]


def default_path(setting: str) -> Path:
    """The `screen.watch_db` setting, or screen-log.sqlite3 in the data dir when it is empty."""
    from edge_ai.paths import get_paths

    return Path(setting).expanduser() if setting else get_paths().data_dir / "screen-log.sqlite3"


def _private_dir(folder: Path) -> None:
    """Create the log's folder owner-only (an existing folder is left as the user set it, unless it is new)."""
    try:
        if not folder.exists():
            folder.mkdir(mode=DIR_MODE, parents=True)
            os.chmod(folder, DIR_MODE)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise EdgeAIError(f"cannot create {folder}: {exc.strerror}; set screen.watch_db to a writable place") from None


def _create_file(path: Path) -> None:
    """Build the schema in a 0600 temp file beside `path`, then link it into place (no clobbering a racing writer)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp makes 0600
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(SCHEMA)
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another watcher created it first: use theirs
    except (OSError, sqlite3.Error) as exc:
        raise EdgeAIError(f"cannot create the screen log {path}: {exc}; set screen.watch_db to a writable place") from None
    finally:
        tmp.unlink(missing_ok=True)

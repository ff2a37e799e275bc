"""Watch mode on Xvfb with real xterms: stores each change once, redacted, never a private window; search,
retention, file permissions, pause, back-off, and the CLI through a subprocess."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_ai.errors import EdgeAIError, NotFoundError
from runtime.screen.privacy import PrivacyPolicy
from runtime.screen.screen_log import Retention, ScreenLog
from runtime.screen.watch import Backoff, Watcher, WatchOptions
from runtime.screen.windows import list_windows, open_display

DOC = "\n".join(f"line {i}: the quick brown fox jumps over the lazy dog" for i in range(6))


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "screen-log.sqlite3"


def focus(title: str) -> None:
    """Give the input focus to the window titled `title` (Xvfb has no window manager to do it)."""
    from Xlib import X

    with open_display() as x:
        target = next(w for w in list_windows(x) if w.title == title)
        x.create_resource_object("window", target.client_id).set_input_focus(X.RevertToParent, X.CurrentTime)
        x.sync()


def watcher(log_path: Path, display: str, policy: PrivacyPolicy | None = None) -> Watcher:
    return Watcher(ScreenLog.create(log_path, Retention()), WatchOptions(), policy or PrivacyPolicy(), display)


def test_a_change_is_stored_once_and_a_one_line_change_makes_a_new_row(display, xterm, log_path: Path):
    xterm("notes", DOC, geometry="60x8+0+0")
    focus("notes")
    with watcher(log_path, display) as w:
        first = w.step()
        assert first is not None and "quick brown fox" in first.text
        assert first.title == "notes"
        for _ in range(3):  # identical frames: no OCR, no row
            assert w.step() is None
        assert w.ocr_calls == 1
        xterm("notes 2", DOC.replace("line 3: the quick brown fox", "line 3: the quick purple fox"), geometry="60x8+0+0")
        focus("notes 2")
        second = w.step()
        assert second is not None and "purple" in second.text
        assert w.ocr_calls == 2
        assert [r[1] for r in w.log.rows()] == ["notes", "notes 2"]


def test_stored_text_is_redacted_and_an_excluded_window_never_reaches_the_database(display, xterm, log_path: Path):
    xterm("KeePassXC - vault", "SECRETWORD zebracorn hunter2", geometry="40x4+0+300")
    xterm("mail", "write to ana.lopez@example.org about the invoice", geometry="60x3+0+0")
    focus("KeePassXC - vault")  # the private window is the active one: its title is not stored either
    with watcher(log_path, display) as w:
        stored = w.step()
    assert stored is not None and "invoice" in stored.text
    with ScreenLog.open(log_path) as log:
        (_, title, text), = log.rows()
        assert "[email]" in text and "ana.lopez" not in text and "example.org" not in text
        assert "zebracorn" not in text.lower() and title == ""
        assert log.search("zebracorn") == []
    raw = log_path.read_bytes()
    assert b"zebracorn" not in raw and b"ana.lopez" not in raw


def test_search_finds_a_word_with_snippet_and_time_and_bad_queries_are_one_line_errors(log_path: Path):
    now = time.time()
    with ScreenLog.create(log_path, Retention()) as log:
        log.add(now - 60, "Terminal", "ValueError: invalid literal for int() with base 10")
        log.add(now, "Browser", "the weather in Lisbon is sunny")
    with ScreenLog.open(log_path) as log:
        hit, = log.search("literal")
        assert hit.title == "Terminal" and abs(hit.time - (now - 60)) < 1e-3
        assert "[literal]" in hit.snippet
        assert [h.title for h in log.search("lisbon OR literal", limit=1)] in (["Terminal"], ["Browser"])
        for bad in ('"unclosed', "AND", "int("):
            with pytest.raises(EdgeAIError) as info:
                log.search(bad)
            assert "\n" not in str(info.value)
    with pytest.raises(NotFoundError):
        ScreenLog.open(log_path.parent / "missing.sqlite3")
    assert not (log_path.parent / "missing.sqlite3").exists()


def test_retention_deletes_old_rows_and_extra_rows(log_path: Path):
    now = time.time()
    with ScreenLog.create(log_path, Retention(days=1, max_rows=3)) as log:
        with log._conn:  # rows seen long ago, written directly
            log._conn.executemany("INSERT INTO frames(time, title, text) VALUES (?, ?, ?)",
                                  [(now - 3 * 86400, "old", "ancient text"), (now - 2 * 86400, "old", "older text")])
        assert log.count() == 2
        log.add(now, "new", "fresh text 0")
        assert [r[2] for r in log.rows()] == ["fresh text 0"]
        assert log.search("ancient") == []
        for i in range(1, 5):
            log.add(now + i, "new", f"fresh text {i}")
        assert [r[2] for r in log.rows()] == ["fresh text 2", "fresh text 3", "fresh text 4"]


def test_the_database_is_owner_only(log_path: Path):
    old = os.umask(0o022)
    try:
        ScreenLog.create(log_path, Retention()).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log_path.parent.stat().st_mode) == 0o700
    assert [p.name for p in log_path.parent.iterdir()] == [log_path.name]  # no temp file left
    os.chmod(log_path, 0o644)
    ScreenLog.create(log_path, Retention()).close()
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600


def test_pause_stops_capture_at_once(display, xterm, log_path: Path):
    xterm("notes", DOC, geometry="60x8+0+0")
    with watcher(log_path, display) as w:
        w.pause()
        assert w.paused and w.step() is None and w.ocr_calls == 0
        stop = threading.Event()
        runner = threading.Thread(target=w.run, args=(stop,))
        runner.start()
        runner.join(0.5)
        stop.set()
        runner.join()
        assert w.ocr_calls == 0 and w.log.count() == 0
        w.resume()
        assert w.step() is not None and w.log.count() == 1


def test_backoff_slows_down_over_budget_busy_or_on_battery_and_recovers():
    options = WatchOptions(interval=1.0, max_interval=8.0, cpu_budget=0.05, cpu_window=2)
    busy, battery = [False], [False]
    policy = Backoff(options, busy=lambda: busy[0], battery=lambda: battery[0])
    policy.record(0.001, 1.0)
    assert policy.interval() == 1.0
    policy.record(3.0, 4.0)  # an OCR'd change: far over budget
    waits = [policy.interval() for _ in range(5)]
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0]
    policy.record(0.001, 8.0)
    policy.record(0.001, 8.0)
    assert [policy.interval() for _ in range(3)] == [4.0, 2.0, 1.0]
    busy[0] = True
    assert policy.interval() == 2.0
    busy[0], battery[0] = False, True
    assert policy.interval() == 4.0  # back to the base, times the battery factor
    assert Backoff(WatchOptions(interval=0.1)).interval() >= 1.0  # never more than one frame a second


def test_cli_watch_for_3_seconds_then_search(display, xterm, tmp_path: Path):
    xterm("todo", "remember the flamingo meeting at noon", geometry="60x3+0+0")
    focus("todo")
    env = dict(os.environ, EDGE_AI_HOME=str(tmp_path / "home"))

    def edge_ai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge_ai", "screen", *args], capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL, env=env)

    missing = edge_ai("search", "flamingo")
    assert missing.returncode != 0 and "screen watch" in missing.stderr
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.sqlite3"))
    watched = edge_ai("watch", "--for", "3")
    assert watched.returncode == 0, watched.stderr
    assert "todo" in watched.stderr and "words stored" in watched.stderr
    found = edge_ai("search", "flamingo", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert hits and hits[0]["title"] == "todo" and "[flamingo]" in hits[0]["snippet"].lower()
    bad = edge_ai("search", '"flamingo')
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert edge_ai("watch", "--interval", "0.2").returncode != 0  # more than one frame a second is refused


def test_cli_watch_stops_cleanly_on_ctrl_c_and_needs_a_display(display, xterm, tmp_path: Path):
    xterm("todo", "remember to water the plants before the flight", geometry="60x3+0+0")
    focus("todo")
    env = dict(os.environ, EDGE_AI_HOME=str(tmp_path / "home"))
    # --for bounds the run should the signal be lost: the test then fails instead of hanging
    proc = subprocess.Popen([sys.executable, "-m", "edge_ai", "screen", "watch", "--for", "120"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    first, stored = proc.stderr.readline(), proc.stderr.readline()  # one line each, however long the path
    assert first.startswith("watching the screen") and "screen-log.sqlite3" in first
    assert "todo" in stored and "words stored" in stored, stored
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, rest
    assert "[stopped]" in rest and "Traceback" not in rest
    no_display = {k: v for k, v in env.items() if k != "DISPLAY"} | {"EDGE_AI_HOME": str(tmp_path / "other")}
    result = subprocess.run([sys.executable, "-m", "edge_ai", "screen", "watch", "--for", "1"], capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL, env=no_display)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").rglob("*.sqlite3"))

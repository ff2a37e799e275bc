"""The real `edge-ai` binary in a real terminal (tmux), driven as a person would: type, read, quit."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SESSION = f"edge-ai-test-{os.getpid()}"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def screen() -> str:
    """The visible pane; -J joins lines the terminal wrapped, so one printed line reads as one."""
    return tmux("capture-pane", "-p", "-J", "-t", SESSION)


def wait_until(condition: Callable[[str], bool], what: str, seconds: float = 90) -> str:
    """Poll the visible screen until `condition` holds (a bound for hangs, not a timing assert)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = screen()
        if condition(text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; screen:\n{screen()}")


@pytest.fixture
def app_in_tmux(registered_model: Path, edge_home: Path, tmp_path: Path) -> Iterator[Path]:
    """Start the app in a tmux pane; yields the file its exit status is written to.

    The pane outlives the app (`sleep`), so the screen can still be read after it quits: a pane that
    closes with its process makes `capture-pane` fail, racing the test's last look at the screen.
    """
    # A stale COLUMNS/LINES export (CI runners set 80x24) must not shrink the app below the pane's 120x36.
    env = (f"EDGE_AI_HOME={shlex.quote(str(edge_home))} EDGE_AI_MODEL_THREADS=1 EDGE_AI_SAMPLING_MAX_TOKENS=12"
           " COLUMNS=80 LINES=24")
    status_file = tmp_path / "status"
    command = (f"env {env} {shlex.quote(sys.executable)} -m edge_ai;"
               f" echo $? > {shlex.quote(str(status_file))}; sleep 60")
    tmux("new-session", "-d", "-x", "120", "-y", "36", "-s", SESSION, command)
    try:
        yield status_file
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


def exit_status(status_file: Path) -> str:
    return status_file.read_text().strip() if status_file.exists() else ""


def test_chat_in_a_real_terminal(app_in_tmux: Path, edge_home: Path) -> None:
    wait_until(lambda s: "model: gemma3-270m" in s and "ready" in s, "the model to load")
    tmux("send-keys", "-t", SESSION, "-l", "Hello from tmux")
    tmux("send-keys", "-t", SESSION, "Enter")
    text = wait_until(lambda s: "tok/s" in s and "ready" in s.splitlines()[-2], "the reply to finish")
    assert "Hello from tmux" in text and "TTFT" in text
    status = text.splitlines()[-2]
    assert "RSS" in status and len(text.splitlines()) == 36, "the app is not using the whole 120x36 pane"
    tmux("send-keys", "-t", SESSION, "C-q")
    wait_until(lambda s: exit_status(app_in_tmux) != "", "the app to quit", seconds=30)
    assert exit_status(app_in_tmux) == "0"
    from edge_ai.history import HistoryStore
    from edge_ai.paths import get_paths

    with HistoryStore(get_paths().history_db) as store:
        (conversation,) = store.list_conversations()
        roles = [m.role for m in store.messages(conversation.id)]
    assert roles == ["user", "assistant"]


def test_an_unwritable_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    """As root, permissions do not stop writes, so a file stands where the data directory must go."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    status_file = tmp_path / "status"
    command = (f"EDGE_AI_HOME={shlex.quote(str(blocker / 'home'))} {shlex.quote(sys.executable)} -m edge_ai;"
               f" echo $? > {shlex.quote(str(status_file))}; sleep 60")
    tmux("new-session", "-d", "-x", "120", "-y", "36", "-s", SESSION, command)
    try:
        text = wait_until(lambda s: exit_status(status_file) != "", "the app to exit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    assert exit_status(status_file) == "1"
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot create"), text
    assert "Traceback" not in text


def test_what_native_code_writes_to_stderr_goes_to_the_log_not_over_the_app(registered_model: Path, edge_home: Path,
                                                                            tmp_path: Path) -> None:
    """A C library writing to file descriptor 2 while the app runs (PortAudio's ALSA host printed
    "Expression 'ContinuePoll(...)' failed" over the chat when an audio stream hiccuped; here a write to
    descriptor 2 from inside the app's process, as such a library does): the line is in the log file, not
    on the screen, and the app draws on."""
    status_file = tmp_path / "status"
    noise = ("import os, threading, time\n"
             "def noise():\n"
             "    for _ in range(120):\n"
             "        os.write(2, b'NATIVE-NOISE\\n')\n"
             "        time.sleep(0.25)\n"
             "threading.Thread(target=noise, daemon=True).start()\n"
             "from edge_ai.cli.main import main\n"
             "main()\n")
    command = (f"env EDGE_AI_HOME={shlex.quote(str(edge_home))} {shlex.quote(sys.executable)} -c {shlex.quote(noise)};"
               f" echo $? > {shlex.quote(str(status_file))}; sleep 60")
    tmux("new-session", "-d", "-x", "120", "-y", "36", "-s", SESSION, command)
    try:
        wait_until(lambda s: "model: gemma3-270m" in s and "ready" in s, "the model to load")
        from edge_ai.paths import get_paths

        log = get_paths().log_file
        deadline = time.monotonic() + 30
        while not (log.exists() and "NATIVE-NOISE" in log.read_text(errors="replace")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "NATIVE-NOISE" in log.read_text(errors="replace")
        time.sleep(1.0)  # more of it is written meanwhile
        assert "NATIVE-NOISE" not in screen()
        tmux("send-keys", "-t", SESSION, "C-q")
        wait_until(lambda s: exit_status(status_file) != "", "the app to quit", seconds=30)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    assert exit_status(status_file) == "0"

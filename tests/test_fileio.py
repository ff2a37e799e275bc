"""Atomic outputs: a writer killed with `kill -9` leaves a hidden temp file; the next write into that
folder removes it (and says so), but never one a live process holds. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_ai.fileio import atomic_write_text, remove_leftovers

# A writer that gets half-way through its output, says where it is, then waits to be killed.
_WRITER = textwrap.dedent("""
    import sys, time
    from edge_ai.fileio import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half of a model")
        print(tmp.name, flush=True)
        time.sleep(600)
""")


def _start_writer(target: Path) -> tuple[subprocess.Popen[str], str]:
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    return writer, writer.stdout.readline().strip()


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path: Path,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model.gguf"
    writer, temp_name = _start_writer(target)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert (tmp_path / temp_name).exists() and not target.exists()  # what kill -9 leaves behind

    atomic_write_text(tmp_path / "other.txt", "next run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"removed 1 temp file(s) left in {tmp_path} by an interrupted run: {temp_name}"]


def test_a_live_writers_temp_file_is_kept(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    writer, temp_name = _start_writer(tmp_path / "model.gguf")
    try:
        atomic_write_text(tmp_path / "other.txt", "meanwhile")
        assert (tmp_path / temp_name).exists()
        assert capfd.readouterr().err == ""
    finally:
        writer.kill()
        writer.wait()


def test_a_locked_temp_file_is_kept_even_when_its_pid_is_gone(tmp_path: Path) -> None:
    """The pid in the name may belong to another pid namespace: the lock decides."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    name = f".model.gguf.edge-ai-tmp-{gone.stdout.strip()}-abc123.tmp"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(tmp_path / name)!r}, os.O_CREAT | os.O_WRONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert remove_leftovers(tmp_path) == []
        assert (tmp_path / name).exists()
    finally:
        holder.kill()
        holder.wait()
    assert remove_leftovers(tmp_path) == [name]  # once nobody holds it


def test_other_hidden_files_are_never_touched(tmp_path: Path) -> None:
    keep = [".model.gguf.abcd1234.tmp", ".notes.txt.swp", ".model.gguf.edge-ai-tmp-x-1.tmp"]
    for name in keep:
        (tmp_path / name).write_text("someone else's")
    assert remove_leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_a_finished_write_leaves_only_the_output(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "done")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "done" and os.stat(tmp_path / "a.txt").st_size == 4

"""Atomic file output: write to a temp file beside the target, then rename into place.

A crash or a full disk mid-write never leaves a half-written file under the final name, and the
data is on disk (fsynced) before the rename, so a power cut cannot leave an empty file there either.

A process killed outright (`kill -9`, out of memory) still leaves its hidden temp file beside the
output. Each temp file is therefore named after its writer's pid and held under an exclusive
`flock` while it is written (the kernel drops the lock when the process dies); the next
`atomic_path` in that folder removes those of its own kind whose writer is gone and no process
holds, and says so in one line on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edge_ai.errors import EdgeAIError


def _read_umask() -> int:
    """The process umask (read once at import: setting it is process-wide, so never mid-run)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


_TEMP_MARK = "edge-ai-tmp"
_TEMP_NAME = re.compile(rf"^\..+\.{_TEMP_MARK}-(?P<pid>\d+)-[^.]+\.tmp$")  # .NAME.edge-ai-tmp-PID-RANDOM.tmp


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename it onto `target` if the block succeeds."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(target.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{_TEMP_MARK}-{os.getpid()}-", suffix=".tmp",
                                        dir=target.parent)
    except OSError as exc:
        raise EdgeAIError(f"cannot write to {target.parent}: {exc.strerror}; choose a writable location") from exc
    tmp = Path(tmp_name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until this process closes fd or dies
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        yield from _write_through(tmp, target)
    finally:
        os.close(fd)


def _write_through(tmp: Path, target: Path) -> Iterator[Path]:
    """Yield `tmp` to the caller's block, then move it onto `target`; remove it on any failure."""
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except OSError as exc:
        hint = _write_failure_hint(exc, (tmp, target, target.parent))
        if hint is None:
            raise  # e.g. reading an input inside the block failed: that error, with its own message
        raise EdgeAIError(f"cannot write {target}: {exc.strerror}; {hint}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def remove_leftovers(folder: Path) -> list[str]:
    """Delete the temp files that killed writers left in `folder`; returns their names.

    A file is removed only when its writer's pid is gone and no process holds its lock (a pid can
    be reused, and a process in another pid namespace may share the folder).
    """
    removed = []
    for entry in os.scandir(folder):
        match = _TEMP_NAME.match(entry.name)
        if match and not _pid_alive(int(match["pid"])) and _unlock_and_remove(Path(entry.path)):
            removed.append(entry.name)
    if removed:
        print(f"removed {len(removed)} temp file(s) left in {folder} by an interrupted run: "
              f"{', '.join(sorted(removed))}", file=sys.stderr)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _unlock_and_remove(path: Path) -> bool:
    """Remove `path` if no process holds its lock (checked while holding it ourselves)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # gone already, or not ours to read
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink()
    except OSError:
        return False  # locked: a live writer; or not removable
    finally:
        os.close(fd)
    return True


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _write_failure_hint(exc: OSError, outputs: tuple[Path, ...]) -> str | None:
    """What to do about an error writing the output, or None when `exc` is about another file (an
    input read inside the block: a write() error names no file, an open() error does)."""
    if exc.filename is not None and Path(exc.filename) not in outputs:
        return None
    if exc.errno in _FULL:
        return "free some space or choose another location"
    if exc.errno in _NOT_WRITABLE:
        return "choose a writable location"
    return "check the disk, then try again or choose another location"  # EIO and the like


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_free_space(target: str | os.PathLike[str], needed: int) -> None:
    """Refuse up front when the disk that will hold `target` has less than `needed` bytes free,
    rather than failing after minutes of work."""
    target = Path(target)
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself will report the problem
    if needed > free:
        mib = 1024 * 1024
        raise EdgeAIError(f"{target.name} needs about {needed / mib:.0f} MiB but {folder} has only "
                          f"{free / mib:.0f} MiB free; free some space or write elsewhere")

"""Atomic file output: write to a temp file beside the target, then rename into place.

A crash or a full disk mid-write never leaves a half-written file under the final name, and the
data is on disk (fsynced) before the rename, so a power cut cannot leave an empty file there either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
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


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename it onto `target` if the block succeeds."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise EdgeAIError(f"cannot write to {target.parent}: {exc.strerror}; choose a writable location") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
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

"""Lock parts of the GGUF file llama.cpp mapped (mlock), so the kernel never pages them out.

llama.cpp's own use_mlock locks the whole mapping, experts included: for a model bigger than RAM
that defeats paging the experts from disk. This locks chosen file ranges instead, found in the
process's own mapping of the file (/proc/self/maps), after the model is loaded. The lock goes when
llama.cpp unmaps the file (closing the model).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

from edge_ai.errors import EdgeAIError

PAGE = mmap.PAGESIZE


def _mappings(path: Path) -> list[tuple[int, int, int]]:
    """(start address, end address, file offset) of each mapping of `path` in this process."""
    target = str(Path(path).resolve())
    found = []
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() == target:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, end, int(fields[2], 16)))
    return found


def lock_file_ranges(path: Path, ranges: list[tuple[int, int]]) -> int:
    """mlock the pages holding `ranges` ((file offset, length)) of `path`'s mapping; returns bytes locked.

    Raises a one-line EdgeAIError when the file is not mapped (mmap off) or the kernel refuses the
    lock (RLIMIT_MEMLOCK: `ulimit -l`, or CAP_IPC_LOCK)."""
    maps = _mappings(path)
    if not maps:
        raise EdgeAIError(f"{Path(path).name} is not memory-mapped (mmap is off): nothing to lock; load it with mmap")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    pages: list[tuple[int, int]] = []
    for offset, length in ranges:
        for start, end, file_offset in maps:
            lo, hi = max(offset, file_offset), min(offset + length, file_offset + end - start)
            if lo < hi:
                first = (start + lo - file_offset) // PAGE * PAGE
                pages.append((first, -(-(start + hi - file_offset) // PAGE) * PAGE))
    locked, last_end = 0, 0
    for first, end in sorted(pages):
        first = max(first, last_end)  # neighbouring tensors share a page
        if first >= end:
            continue
        if libc.mlock(first, end - first) != 0:
            err = ctypes.get_errno()
            raise EdgeAIError(f"cannot lock {Path(path).name}'s always-used weights in RAM ({os.strerror(err)}); "
                              "raise the locked-memory limit (ulimit -l) or load without locking")
        locked += end - first
        last_end = end
    return locked

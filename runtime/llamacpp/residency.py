"""Lock parts of the GGUF file llama.cpp mapped (mlock), so the kernel never pages them out, and
page the rest in no bigger pieces than the model reads.

llama.cpp's own use_mlock locks the whole mapping, experts included: for a model bigger than RAM
that defeats paging the experts from disk. This locks chosen file ranges instead, found in the
process's own mapping of the file (/proc/self/maps), after the model is loaded. The lock goes when
llama.cpp unmaps the file (closing the model).

What stays unlocked is paged in on demand: on a fault in a file mapping the kernel reads the disk's
read-ahead window (read_ahead_kb: 128 KiB by default, 8 MiB on some VMs) centred on the faulting
page. For a MoE model that window is worth it while it fits inside one expert's slab of a tensor;
when it is bigger, most of each read is other (cold) experts, which fills the memory the process is
allowed with pages nobody asked for and evicts the ones that were in use. Then the mapping is
marked MADV_RANDOM: a fault reads the page it needs (measured: a model twice its memory cgroup
with 8 MiB read-ahead read 260 MiB from disk per token, 8 MiB with MADV_RANDOM; benchmarks/bench_offload.py).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import GGUFInfo
from edge_ai.tensor_roles import Role, role_of, weights

PAGE = mmap.PAGESIZE
DEFAULT_READ_AROUND = 128 * 1024  # the kernel's VM_READAHEAD_PAGES, when sysfs does not say
SYS_BDI = Path("/sys/class/bdi")
SYS_DEV_BLOCK = Path("/sys/dev/block")


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


def read_around_bytes(path: Path, *, bdi_root: Path = SYS_BDI, block_root: Path = SYS_DEV_BLOCK) -> int:
    """The read-ahead window of the block device holding `path` (what a fault in its mapping reads).

    The device's backing-dev-info names it by major:minor; a partition's is its disk's (the parent
    in /sys/dev/block). A file not on a block device (tmpfs, network, overlay) gets the kernel default."""
    dev = os.stat(path).st_dev
    name = f"{os.major(dev)}:{os.minor(dev)}"
    candidates = [bdi_root / name / "read_ahead_kb", block_root / name / "queue" / "read_ahead_kb"]
    device = block_root / name
    if device.exists():
        candidates.append(device.resolve().parent / "queue" / "read_ahead_kb")
    for candidate in candidates:
        try:
            return int(candidate.read_text().strip()) * 1024
        except (OSError, ValueError):
            continue
    return DEFAULT_READ_AROUND


def smallest_expert_slab(info: GGUFInfo) -> int:
    """Bytes of one expert in the model's smallest routed-expert tensor (each such tensor stacks its
    experts along the outermost dimension); 0 for a dense model."""
    n_expert = weights(info).n_expert
    slabs = [t.nbytes // n_expert for t in info.tensors if n_expert and role_of(t.name) is Role.EXPERTS]
    return min(slabs, default=0)


def pages_randomly(read_around: int, slab: int) -> bool:
    """Whether a fault in the unlocked experts should read only its page (module docstring): when the
    read-around window is bigger than an expert's slab, most of what it reads belongs to other experts."""
    return slab > 0 and read_around > slab


def lock_file_ranges(path: Path, ranges: list[tuple[int, int]], *, random_paging: bool) -> int:
    """mlock the pages holding `ranges` ((file offset, length)) of `path`'s mapping; returns bytes locked.

    The rest of the mapping is then marked MADV_RANDOM if `random_paging` (the caller decides with
    `pages_randomly`, from the GGUF it already read).
    Raises a one-line EdgeAIError when the file is not mapped (mmap off) or the kernel refuses the
    lock (RLIMIT_MEMLOCK: `ulimit -l`, or CAP_IPC_LOCK)."""
    maps = _mappings(path)
    if not maps:
        raise EdgeAIError(f"{Path(path).name} is not memory-mapped (mmap is off): nothing to lock; load it with mmap")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    locked = _lock(libc, path, maps, ranges)
    if random_paging:
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for start, end, _ in maps:  # the locked pages never fault: the advice is for the paged ones
            if libc.madvise(start, end - start, mmap.MADV_RANDOM) != 0:
                raise EdgeAIError(f"cannot advise {Path(path).name}'s mapping: {os.strerror(ctypes.get_errno())}")
    return locked


def random_paged(path: Path) -> bool:
    """Whether every mapping of `path` in this process is marked MADV_RANDOM (smaps VmFlags `rr`)."""
    target = str(Path(path).resolve())
    flags, inside = [], False
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split(maxsplit=5)
            if fields and "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                inside = len(fields) == 6 and fields[5].strip() == target
            elif inside and line.startswith("VmFlags:"):
                flags.append("rr" in line.split()[1:])
    return bool(flags) and all(flags)


def _lock(libc: ctypes.CDLL, path: Path, maps: list[tuple[int, int, int]], ranges: list[tuple[int, int]]) -> int:
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

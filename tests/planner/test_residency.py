"""Locking the always-used weights of a model run from mmap: the file ranges come from the header
(everything but the token embedding and the routed experts, plus the hot experts' slabs), the engine
mlocks exactly those pages of llama.cpp's mapping, generates the same tokens, and unlocks on close."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf
from edge_ai.tensor_roles import Role, weights
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import SamplingParams, TokenEvent
from runtime.planner.residency import resident_ranges

PROMPT = "the cat sat on the mat and then"


def _locked_kib() -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmLck:"))


def _greedy(engine: Engine) -> list[str]:
    return [e.text for e in engine.complete(PROMPT, SamplingParams(max_tokens=12, temperature=0.0))
            if isinstance(e, TokenEvent)]


@pytest.mark.slow
def test_ranges_are_the_always_used_weights_and_the_hot_slabs(tiny_moe) -> None:
    info = read_gguf(tiny_moe("qwen2moe"))  # f32: nothing is repacked
    w = weights(info)
    always = w.total - w.by_role[Role.EMBEDDINGS] - w.by_role[Role.EXPERTS]
    ranges = resident_ranges(info)
    assert sum(n for _, n in ranges) == always
    assert all(a + n <= b for (a, n), (b, _) in zip(ranges, ranges[1:])) and ranges[-1][0] + ranges[-1][1] <= info.file_size
    hot = resident_ranges(info, {0: [1], 1: [0, 3]})
    slab_bytes = sum(w.per_layer[il][Role.EXPERTS] // w.n_expert * len(es) for il, es in ((0, [1]), (1, [0, 3])))
    assert sum(n for _, n in hot) == always + slab_bytes


@pytest.mark.slow
def test_engine_locks_those_pages_and_generates_the_same(tiny_moe) -> None:
    path = tiny_moe("qwen2moe")
    base = EngineOptions(context=256, batch=64)
    plain = Engine(path, options=base)
    try:
        expected = _greedy(plain)
    finally:
        plain.close()
    before = _locked_kib()
    engine = Engine(path, options=EngineOptions(context=256, batch=64, lock_resident=True, hot_experts=((0, (1,)),)))
    try:
        pages = sum(-(-n // mmap.PAGESIZE) for _, n in resident_ranges(read_gguf(path), {0: [1]}))
        assert 0 < engine.locked_bytes <= (pages + len(resident_ranges(read_gguf(path), {0: [1]}))) * mmap.PAGESIZE
        assert _locked_kib() - before == engine.locked_bytes // 1024
        assert _greedy(engine) == expected
    finally:
        engine.close()
    assert _locked_kib() == before  # unmapping the file dropped the lock
    with pytest.raises(EdgeAIError, match="not memory-mapped"):
        Engine(path, options=EngineOptions(context=256, batch=64, lock_resident=True, use_mmap=False))


@pytest.mark.slow
def test_paged_part_is_advised_random_when_read_around_exceeds_a_slab(tiny_moe) -> None:
    """The tiny model's expert slabs (a few KiB) are smaller than any read-ahead window: the engine's
    lock marks the mapping MADV_RANDOM (smaps `rr`); asked not to, the lock leaves the advice alone."""
    from runtime.llamacpp.residency import lock_file_ranges, random_paged, smallest_expert_slab

    path = tiny_moe("qwen2moe")
    info = read_gguf(path)
    assert smallest_expert_slab(info) == min(t.nbytes for t in info.tensors if "_exps." in t.name) // weights(info).n_expert
    engine = Engine(path, options=EngineOptions(context=256, batch=64, lock_resident=True))
    try:
        assert random_paged(path)
    finally:
        engine.close()
    plain = Engine(path, options=EngineOptions(context=256, batch=64))
    try:
        assert not random_paged(path)
        lock_file_ranges(path, resident_ranges(info), random_paging=False)
        assert not random_paged(path)
        expected = _greedy(plain)
        assert lock_file_ranges(path, [], random_paging=True) == 0 and random_paged(path)
        assert _greedy(plain) == expected
    finally:
        plain.close()


def test_random_paging_rule() -> None:
    from runtime.llamacpp.residency import pages_randomly

    assert pages_randomly(8 * 1024**2, 557 * 1024)  # an 8 MiB read-around mostly reads other experts
    assert not pages_randomly(128 * 1024, 557 * 1024)  # the default 128 KiB stays inside one expert
    assert not pages_randomly(128 * 1024, 0)  # a dense model: nothing to decide


def test_read_around_from_sysfs(tmp_path: Path) -> None:
    """The device's backing-dev-info first, a partition's disk next, the kernel default otherwise."""
    import os

    from runtime.llamacpp.residency import DEFAULT_READ_AROUND, read_around_bytes

    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    dev = os.stat(path).st_dev
    name = f"{os.major(dev)}:{os.minor(dev)}"
    bdi, block = tmp_path / "bdi", tmp_path / "block"
    assert read_around_bytes(path, bdi_root=bdi, block_root=block) == DEFAULT_READ_AROUND
    disk = tmp_path / "devices" / "vda"
    (disk / "queue").mkdir(parents=True)
    (disk / "queue" / "read_ahead_kb").write_text("4096\n")
    (disk / "vda1").mkdir()
    block.mkdir()
    (block / name).symlink_to(disk / "vda1")  # the file is on a partition of vda
    assert read_around_bytes(path, bdi_root=bdi, block_root=block) == 4096 * 1024
    (bdi / name).mkdir(parents=True)
    (bdi / name / "read_ahead_kb").write_text("8192\n")
    assert read_around_bytes(path, bdi_root=bdi, block_root=block) == 8192 * 1024


def test_unmapped_file_is_refused(tmp_path: Path) -> None:
    from runtime.llamacpp.residency import lock_file_ranges

    path = tmp_path / "x.gguf"
    path.write_bytes(b"\0" * 8192)
    with pytest.raises(EdgeAIError, match="x.gguf is not memory-mapped"):
        lock_file_ranges(path, [(0, 4096)], random_paging=False)

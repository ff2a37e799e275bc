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


def test_unmapped_file_is_refused(tmp_path: Path) -> None:
    from runtime.llamacpp.residency import lock_file_ranges

    path = tmp_path / "x.gguf"
    path.write_bytes(b"\0" * 8192)
    with pytest.raises(EdgeAIError, match="x.gguf is not memory-mapped"):
        lock_file_ranges(path, [(0, 4096)])

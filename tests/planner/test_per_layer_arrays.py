"""Per-layer metadata arrays longer than the tokenizer-array cutoff (64 items) are read in full, so a
model with more than 64 layers is sized layer by layer: an 80-layer tiny llama that gives its KV head
count once per layer gets the KV cache llama.cpp allocates (a summarised array would fall back to
one KV head per query head, twice the real cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
from memory_log import allocated, assert_close
from tiny_gguf import write_tiny_llama

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import diagnose, read_gguf
from runtime.llamacpp.load import ensure_loads
from runtime.planner.plan import GIB, Budget, Request, make_plan

N_LAYER = 80
CTX = 512  # the tiny writer's trained context
KV_HEADS = [2] * N_LAYER  # the writer's attn_k/attn_v are 2 heads wide in every layer


@pytest.mark.slow
def test_80_layer_per_layer_kv_heads_match_llama_cpp(tmp_path: Path, caplog) -> None:
    path = write_tiny_llama(tmp_path / "deep.gguf", n_layer=N_LAYER,
                            extra_metadata={"llama.attention.head_count_kv": KV_HEADS})
    info = read_gguf(path)
    assert info.metadata["llama.attention.head_count_kv"] == KV_HEADS
    plan = make_plan(info, Budget(ram=GIB), Request(ctx=CTX))
    kv, _ = allocated(path, caplog, n_ctx=plan.ctx, n_batch=512, n_ubatch=512)
    assert_close(plan.cpu.kv_cache, kv, "80-layer per-layer KV heads")
    uniform = make_plan(read_gguf(write_tiny_llama(tmp_path / "uniform.gguf", n_layer=N_LAYER)),
                        Budget(ram=GIB), Request(ctx=CTX))
    assert plan.cpu.kv_cache == uniform.cpu.kv_cache  # the scalar key and the per-layer array agree


@pytest.mark.parametrize(("kv_heads", "wording"), [
    ([2, 2, 4, 2], "head_count_kv is 4 for layer 2 but blk.2.attn_k.weight is 32 values wide, not 4 heads x 16"),
    (4, "head_count_kv is 4 but blk.0.attn_k.weight is 32 values wide"),
])
def test_diagnose_catches_kv_heads_that_disagree_with_attn_k(tmp_path: Path, kv_heads, wording: str) -> None:
    """Every value divides head_count (4) and is in range, so only the tensor shapes tell it is wrong;
    the KV cache would be sized from the array."""
    path = write_tiny_llama(tmp_path / "bad.gguf", n_layer=4, extra_metadata={"llama.attention.head_count_kv": kv_heads})
    problems = diagnose(read_gguf(path))
    assert len(problems) == 1 and wording in problems[0] and "convert" in problems[0], problems
    good = write_tiny_llama(tmp_path / "good.gguf", n_layer=4, extra_metadata={"llama.attention.head_count_kv": [2] * 4})
    assert diagnose(read_gguf(good)) == []
    # llama.cpp will not load it either: the scalar fails its shape check, the per-layer array aborts the
    # process in a GGML_ASSERT while building the graph (so diagnose's line is the only readable one)
    with pytest.raises(EdgeAIError, match=r"wrong shape|GGML_ASSERT"):
        ensure_loads(path, {"n_ctx": 256})

"""Per-layer metadata arrays longer than the tokenizer-array cutoff (64 items) are read in full, so a
model with more than 64 layers is sized layer by layer: an 80-layer tiny llama that gives its KV head
count once per layer gets the KV cache llama.cpp allocates (a summarised array would fall back to
one KV head per query head, twice the real cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
from memory_log import allocated, assert_close
from tiny_gguf import write_tiny_llama

from edge_ai.gguf_file import read_gguf
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

"""edge_ai.kv_cache against llama.cpp's own allocation, for every family the converter writes.

Each tiny checkpoint of tiny_hf_more is converted and loaded by llama.cpp at a 4096-token context;
the KV cache and recurrent state llama.cpp logs must match the estimate within 5%. The families
are the ones where a naive 2 x layers x kv heads x head_dim count is wrong: LFM2's convolution
layers (no KV cache, a small recurrent state), DeepSeek's MLA (one latent per token, no V cache),
the sliding-window layers of Gemma 2/3 and gpt-oss (a window-sized cache unless swa_full), and the
plain MoE / NoPE families for contrast.
"""

from __future__ import annotations

import pytest
from memory_log import allocated, assert_close

from edge_ai.gguf_file import read_gguf
from edge_ai.kv_cache import cache_layers, kv_cache_bytes, recurrent_state_bytes

N_CTX = 4096
N_UBATCH = 512
SLIDING = ("gemma2", "gemma3", "gpt_oss")
FAMILIES = ("olmoe", "granitemoe", "smollm3", "deepseek_v2", "deepseek_v3", "glm4moe", "lfm2") + SLIDING


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "swa_full"), [(a, False) for a in FAMILIES] + [(a, True) for a in SLIDING])
def test_estimate_matches_what_llama_cpp_allocates(converted_more, caplog, arch: str, swa_full: bool) -> None:
    path = converted_more(arch).gguf
    info = read_gguf(path)
    kv, recurrent = allocated(path, caplog, n_ctx=N_CTX, n_batch=N_UBATCH, n_ubatch=N_UBATCH, swa_full=swa_full)
    assert kv > 0
    assert_close(kv_cache_bytes(info, N_CTX, n_ubatch=N_UBATCH, swa_full=swa_full), kv, f"{arch} KV cache")
    assert_close(recurrent_state_bytes(info), recurrent, f"{arch} recurrent state")


@pytest.mark.slow
def test_convolution_state_is_per_sequence_not_per_token(converted_more, caplog) -> None:
    """One sequence's state is ~1 KiB here, below the log's 0.01 MiB; 256 of them are measurable."""
    path = converted_more("lfm2").gguf
    info = read_gguf(path)
    kv, recurrent = allocated(path, caplog, n_ctx=N_CTX, n_seq_max=256, kv_unified=True)
    assert_close(recurrent_state_bytes(info, n_seq=256), recurrent, "lfm2 recurrent state, 256 sequences")
    assert_close(kv_cache_bytes(info, N_CTX), kv, "lfm2 KV cache, 256 sequences sharing one cache")
    assert recurrent_state_bytes(info, n_seq=256) == 256 * recurrent_state_bytes(info) > 0


@pytest.mark.slow
def test_hybrid_mla_and_sliding_layers_are_not_counted_as_full_attention(converted_more) -> None:
    lfm2 = read_gguf(converted_more("lfm2").gguf)
    kinds = lfm2.metadata["lfm2.attention.head_count_kv"]
    assert 0 in kinds and len(cache_layers(lfm2)[0]) == sum(1 for k in kinds if k)
    for arch in ("deepseek_v2", "deepseek_v3"):
        layers, _ = cache_layers(read_gguf(converted_more(arch).gguf))
        assert all(layer.v == 0 for layer in layers)  # MLA: the latent is the only cache
    gemma3 = read_gguf(converted_more("gemma3").gguf)
    assert [layer.sliding for layer in cache_layers(gemma3)[0]] == [True, False, True]
    assert kv_cache_bytes(gemma3, N_CTX) < kv_cache_bytes(gemma3, N_CTX, swa_full=True)

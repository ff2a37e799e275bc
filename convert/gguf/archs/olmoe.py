"""OLMoE (`OlmoeForCausalLM`), llama.cpp architecture "olmoe".

A Qwen2-MoE-like block without a shared expert, with RMSNorm on Q and K over *all* heads at once
(`q_norm` of hidden_size values, `k_norm` of n_head_kv x head_dim), before RoPE (NeoX, so no Q/K
permutation). llama.cpp sizes both norms n_embd, so it only loads models whose K has as many heads
as Q (every released OLMoE does); grouped-query configs are refused. Routing is softmax, top-k,
weights not renormalised (`norm_topk_prob` false); llama.cpp's graph has no `clip_qkv`.
"""

from __future__ import annotations

from gguf.constants import MODEL_ARCH
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.archs.llama import unsupported_rope
from convert.gguf.archs.moe import EXPERT_REGROUP, output_required, routing
from convert.gguf.hparams import (
    DECODER_HPARAMS,
    MOE_HPARAMS,
    ROPE_SCALING_HPARAMS,
    ModelConfig,
)
from convert.gguf.registry import Architecture, register
from convert.gguf.tensors import MOE_BLOCK
from edge_ai.errors import EdgeAIError


def olmoe_attention(config: ModelConfig) -> list[str]:
    """Refuse what llama.cpp's olmoe graph cannot compute: Q/K clipping, GQA, a separate head_dim,
    an output projection bias."""
    if config.get("attention_bias") is True:
        raise EdgeAIError("config.json attention_bias=true: llama.cpp's olmoe has no attention output bias")
    if config.get("clip_qkv") is not None:
        raise EdgeAIError(f"config.json clip_qkv={config.get('clip_qkv')}: llama.cpp's olmoe does not clip "
                          "Q/K/V, so it would compute a different model")
    if config.n_head_kv != config.n_head:
        raise EdgeAIError(f"config.json num_key_value_heads {config.n_head_kv} differs from num_attention_heads "
                          f"{config.n_head}: llama.cpp's olmoe sizes k_norm for as many K heads as Q heads")
    if config.head_dim * config.n_head != config.n_embd:
        raise EdgeAIError(f"config.json head_dim {config.head_dim} x {config.n_head} heads is not hidden_size "
                          f"{config.n_embd}, which llama.cpp's olmoe requires")
    return []


OLMOE = register(Architecture(
    gguf_arch=MODEL_ARCH.OLMOE,
    hf_architectures=("OlmoeForCausalLM",),
    model_types=("olmoe",),
    hparams=DECODER_HPARAMS + ROPE_SCALING_HPARAMS + MOE_HPARAMS,
    block_tensors=MOE_BLOCK + (T.ATTN_Q_NORM, T.ATTN_K_NORM),
    shapes={T.ATTN_Q_NORM: lambda c: (c.n_head * c.head_dim,),
            T.ATTN_K_NORM: lambda c: (c.n_head_kv * c.head_dim,)},
    regroup=EXPERT_REGROUP,
    checks=(routing("olmoe", normalized=False, default_norm=False), output_required("olmoe"),
            olmoe_attention, unsupported_rope),
))

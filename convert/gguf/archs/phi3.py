"""Phi-3 / Phi-3.5 / Phi-4-mini (dense), llama.cpp architecture "phi3".

The fused `qkv_proj` and `gate_up_proj` are kept fused (`attn_qkv`, `ffn_up` of 2 x n_ff rows:
gate first, then up), as llama.cpp's phi3 graph expects. LongRoPE becomes two tensors of per-frequency
factors plus an attention factor. llama.cpp disables Phi's sliding window but wants the key written
(0 when absent).
"""

from __future__ import annotations

import math

import numpy as np
from gguf.constants import MODEL_ARCH, Keys
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.hparams import (
    DECODER_HPARAMS,
    F32,
    U32,
    HParam,
    ModelConfig,
    sliding_window_hparam,
)
from convert.gguf.registry import Architecture, register
from edge_ai.errors import EdgeAIError


def _original_context(config: ModelConfig) -> int | None:
    return config.rope.get("original_max_position_embeddings", config.get("original_max_position_embeddings"))


def _is_longrope(config: ModelConfig) -> bool:
    return config.rope["rope_type"] in ("longrope", "su")


def longrope_attn_factor(config: ModelConfig) -> float | None:
    if not _is_longrope(config):
        return None
    if config.rope.get("attention_factor") is not None:
        return float(config.rope["attention_factor"])
    context, original = config.require("max_position_embeddings"), _original_context(config)
    if not original:
        raise EdgeAIError("config.json uses LongRoPE but has no original_max_position_embeddings; fix config.json")
    scale = context / original
    return math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0


def longrope_factors(config: ModelConfig) -> list[tuple[T, np.ndarray]]:
    if not _is_longrope(config):
        if config.rope["rope_type"] != "default":
            raise EdgeAIError(f"Phi-3 RoPE type {config.rope['rope_type']!r} is not supported; "
                              "only default and longrope are")
        return []
    out = []
    for key, kind in (("long_factor", T.ROPE_FACTORS_LONG), ("short_factor", T.ROPE_FACTORS_SHORT)):
        factors = config.rope.get(key)
        if not isinstance(factors, list) or len(factors) != config.rope_dims // 2:
            raise EdgeAIError(f"config.json rope {key} must list {config.rope_dims // 2} numbers "
                              "(half the rotary dimensions); fix config.json")
        out.append((kind, np.asarray(factors, dtype=np.float32)))
    return out


PHI3 = register(Architecture(
    gguf_arch=MODEL_ARCH.PHI3,
    hf_architectures=("Phi3ForCausalLM",),
    model_types=("phi3",),
    hparams=DECODER_HPARAMS + (
        sliding_window_hparam(zero_when_absent=True),
        HParam(Keys.Rope.SCALING_ORIG_CTX_LEN, _original_context, U32),
        HParam(Keys.Rope.SCALING_ATTN_FACTOR, longrope_attn_factor, F32),
    ),
    block_tensors=(T.ATTN_NORM, T.ATTN_QKV, T.ATTN_OUT, T.FFN_NORM, T.FFN_UP, T.FFN_DOWN),
    shapes={T.FFN_UP: lambda c: (2 * c.n_ff, c.n_embd)},
    extra_tensors=(longrope_factors,),
))

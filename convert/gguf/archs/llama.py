"""Llama and Mistral (dense), llama.cpp architecture "llama".

llama.cpp runs this family with interleaved (GPT-J style) RoPE, so Q and K rows are permuted from
Hugging Face's rotate-half layout. Llama-3.x RoPE scaling becomes a `rope_freqs` tensor of
per-frequency divisors. Mistral's sliding window is not implemented by llama.cpp's llama graph.
"""

from __future__ import annotations

import math

import numpy as np
from gguf.constants import MODEL_ARCH
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.hparams import ModelConfig
from convert.gguf.registry import Architecture, register
from convert.gguf.tensors import permute_rope


def llama3_rope_freqs(config: ModelConfig) -> list[tuple[T, np.ndarray]]:
    """Llama-3.1 'llama3' RoPE scaling as llama.cpp wants it: one divisor per rotary frequency."""
    rope = config.rope
    if rope["rope_type"] != "llama3":
        return []
    dim = config.rope_dims
    base = config.rope_theta
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings",
                             config.get("original_max_position_embeddings", default=8192)))
    factors = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * base ** (i / dim)
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return [(T.ROPE_FREQS, np.asarray(factors, dtype=np.float32))]


def sliding_window_unsupported(config: ModelConfig) -> list[str]:
    window = config.get("sliding_window")
    context = config.get("max_position_embeddings")
    if isinstance(window, int) and isinstance(context, int) and 0 < window < context:
        return [f"config.json sliding_window={window} is ignored: llama.cpp attends to the whole context "
                f"for this architecture, so outputs differ past {window} tokens"]
    return []


def unsupported_rope(config: ModelConfig) -> list[str]:
    if config.rope["rope_type"] in ("default", "linear", "yarn", "llama3"):
        return []
    return [f"RoPE type {config.rope['rope_type']!r} is not supported by llama.cpp for this architecture; "
            "long-context outputs will differ"]


LLAMA = register(Architecture(
    gguf_arch=MODEL_ARCH.LLAMA,
    hf_architectures=("LlamaForCausalLM", "MistralForCausalLM"),
    model_types=("llama", "mistral"),
    transforms={T.ATTN_Q: permute_rope("n_head"), T.ATTN_K: permute_rope("n_head_kv")},
    extra_tensors=(llama3_rope_freqs,),
    checks=(sliding_window_unsupported, unsupported_rope),
))

"""Qwen3 (dense), llama.cpp architecture "qwen3": per-head RMSNorm on Q and K (`q_norm`/`k_norm`),
an explicit head_dim that need not be hidden_size / heads, NeoX RoPE, no biases."""

from __future__ import annotations

from gguf.constants import MODEL_ARCH
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.archs.llama import unsupported_rope
from convert.gguf.archs.qwen2 import sliding_window_unused
from convert.gguf.registry import Architecture, register
from convert.gguf.tensors import DENSE_BLOCK

QWEN3 = register(Architecture(
    gguf_arch=MODEL_ARCH.QWEN3,
    hf_architectures=("Qwen3ForCausalLM",),
    model_types=("qwen3",),
    block_tensors=DENSE_BLOCK + (T.ATTN_Q_NORM, T.ATTN_K_NORM),
    checks=(sliding_window_unused, unsupported_rope),
))

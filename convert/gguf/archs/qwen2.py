"""Qwen2 / Qwen2.5 (dense), llama.cpp architecture "qwen2": Q/K/V biases, NeoX RoPE (no permutation),
usually tied embeddings on the small sizes."""

from __future__ import annotations

from gguf.constants import MODEL_ARCH

from convert.gguf.archs.llama import unsupported_rope
from convert.gguf.hparams import ModelConfig
from convert.gguf.registry import Architecture, register


def sliding_window_unused(config: ModelConfig) -> list[str]:
    if config.get("use_sliding_window") is True:
        return ["config.json use_sliding_window=true is ignored: llama.cpp runs Qwen2 with full attention"]
    return []


QWEN2 = register(Architecture(
    gguf_arch=MODEL_ARCH.QWEN2,
    hf_architectures=("Qwen2ForCausalLM",),
    model_types=("qwen2",),
    checks=(sliding_window_unused, unsupported_rope),
))

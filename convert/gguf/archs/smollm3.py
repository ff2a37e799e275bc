"""SmolLM3 (`SmolLM3ForCausalLM`), llama.cpp architecture "smollm3".

A Llama-shaped model (interleaved RoPE: Q and K rows permuted as for llama, tied embeddings on the
3B) whose every 4th layer has no position encoding (NoPE). transformers reads the pattern from
config.json `no_rope_layers` (1 = RoPE, 0 = NoPE; derived from `no_rope_layer_interval` when
absent); llama.cpp hard-codes "layer i has RoPE unless (i + 1) % 4 == 0" and has no key for it, so
any other pattern is refused rather than converted into a model that computes something else.
llama.cpp's graph has no sliding window, no output-projection or MLP biases, and no rope_freqs tensor.
"""

from __future__ import annotations

from gguf.constants import MODEL_ARCH

from convert.gguf.archs.llama import LLAMA
from convert.gguf.hparams import ModelConfig
from convert.gguf.registry import Architecture, register
from edge_ai.errors import EdgeAIError

LLAMA_CPP_NOPE_INTERVAL = 4  # llama.cpp's n_no_rope_layer_step for smollm3


def nope_layers(config: ModelConfig) -> list[str]:
    """config.json's NoPE layers must be llama.cpp's (every 4th); a mismatch names the first layer."""
    n_layer = config.n_layer
    interval = config.get("no_rope_layer_interval", default=LLAMA_CPP_NOPE_INTERVAL)
    pattern = config.get("no_rope_layers",
                         default=[int((i + 1) % interval != 0) for i in range(n_layer)] if isinstance(interval, int)
                         and interval > 0 else None)
    if not isinstance(pattern, list) or len(pattern) != n_layer or any(v not in (0, 1) for v in pattern):
        raise EdgeAIError(f"config.json no_rope_layers must list {n_layer} entries of 0 or 1 "
                          "(one per layer); fix config.json")
    for i, uses_rope in enumerate(pattern):
        if bool(uses_rope) != bool((i + 1) % LLAMA_CPP_NOPE_INTERVAL):
            raise EdgeAIError(f"config.json no_rope_layers gives layer {i} {'RoPE' if uses_rope else 'no RoPE'}, "
                              f"but llama.cpp's smollm3 leaves out RoPE on every {LLAMA_CPP_NOPE_INTERVAL}th layer "
                              "only; it would compute a different model")
    return []


def smollm3_block(config: ModelConfig) -> list[str]:
    warnings = []
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key) is True:
            raise EdgeAIError(f"config.json {key}=true: llama.cpp's smollm3 has no such biases")
    if config.get("use_sliding_window") is True:
        warnings.append("config.json use_sliding_window=true is ignored: llama.cpp runs SmolLM3 with full attention")
    rope_type = config.rope["rope_type"]
    if rope_type not in ("default", "linear", "yarn"):
        warnings.append(f"RoPE type {rope_type!r} is not supported by llama.cpp's smollm3; "
                        "long-context outputs will differ")
    return warnings


SMOLLM3 = register(Architecture(
    gguf_arch=MODEL_ARCH.SMOLLM3,
    hf_architectures=("SmolLM3ForCausalLM",),
    model_types=("smollm3",),
    transforms=LLAMA.transforms,
    checks=(nope_layers, smollm3_block),
))

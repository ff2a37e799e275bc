"""Granite-MoE (`GraniteMoeForCausalLM`, IBM Granite 3.x 1B-A400M / 3B-A800M), llama.cpp "granitemoe".

A Llama-shaped model (interleaved RoPE: Q and K rows are permuted as for llama) with four scalar
multipliers, each a GGUF key llama.cpp applies where transformers does: `embedding_multiplier`
(embeddings), `attention_multiplier` (the attention scale, replacing 1/sqrt(head_dim)),
`residual_multiplier` (each branch before the residual add) and `logits_scaling` (logits divided).
The experts are stored fused like JetMoE's: `block_sparse_moe.input_linear.weight`
[n_expert, 2 x n_ff, n_embd] (gate rows first, then up) is cut into `ffn_gate_exps` and
`ffn_up_exps`; `output_linear` is `ffn_down_exps`, `router.layer` the router. Routing is softmax over
the top-k logits, which is llama.cpp's renormalised top-k.
"""

from __future__ import annotations

from gguf.constants import MODEL_ARCH, Keys

from convert.gguf.archs.llama import LLAMA, unsupported_rope
from convert.gguf.archs.moe import routing
from convert.gguf.hparams import (
    DECODER_HPARAMS,
    F32,
    MOE_HPARAMS,
    ROPE_SCALING_HPARAMS,
    HParam,
)
from convert.gguf.registry import Architecture, register
from convert.gguf.tensors import MOE_BLOCK, split_tensor

GRANITE_SCALES: tuple[HParam, ...] = (
    HParam(Keys.LLM.EMBEDDING_SCALE, ("embedding_multiplier",), F32),
    HParam(Keys.Attention.SCALE, ("attention_multiplier",), F32),
    HParam(Keys.LLM.RESIDUAL_SCALE, ("residual_multiplier",), F32),
    HParam(Keys.LLM.LOGIT_SCALE, ("logits_scaling",), F32, required=True),  # llama.cpp requires it
)

GRANITE_MOE = register(Architecture(
    gguf_arch=MODEL_ARCH.GRANITE_MOE,
    hf_architectures=("GraniteMoeForCausalLM",),
    model_types=("granitemoe",),
    hparams=DECODER_HPARAMS + ROPE_SCALING_HPARAMS + MOE_HPARAMS + GRANITE_SCALES,
    block_tensors=MOE_BLOCK,
    transforms=LLAMA.transforms,
    regroup=(split_tensor(".block_sparse_moe.input_linear.weight",
                          (".block_sparse_moe.experts.w1.weight", ".block_sparse_moe.experts.w3.weight"), axis=1),),
    checks=(routing("granitemoe", normalized=None), unsupported_rope),
))

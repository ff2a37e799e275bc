"""Mixture-of-experts families: Qwen2-MoE / Qwen1.5-MoE ("qwen2moe"), Qwen3-MoE ("qwen3moe") and
Mixtral (llama.cpp's "llama" with experts).

Experts are stacked into 3-D `ffn_{gate,up,down}_exps` (n_expert, rows, cols). Checkpoints list
them per expert (`mlp.experts.{e}.gate_proj/up_proj/down_proj`, Mixtral `block_sparse_moe.experts.{e}.w1/w3/w2`),
or, as transformers 5 holds them in memory, already fused: `mlp.experts.gate_up_proj`
(n_expert, 2 x n_ff_exp, n_embd, gate rows first) and `mlp.experts.down_proj`; both are accepted.
The router (`mlp.gate` / `block_sparse_moe.gate`) becomes `ffn_gate_inp` and stays F32.

llama.cpp hard-codes the routing of each family: softmax over the experts, top-k, then
renormalised top-k weights for qwen3moe and Mixtral but not for qwen2moe; a config.json
`norm_topk_prob` that disagrees is refused, as are dense layers between MoE layers
(`decoder_sparse_step` / `mlp_only_layers`), which these llama.cpp graphs do not have.
Qwen2-MoE's shared expert becomes `ffn_{gate,up,down}_shexp` plus its sigmoid gate `ffn_gate_inp_shexp`.
"""

from __future__ import annotations

from gguf.constants import MODEL_ARCH
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.archs.llama import LLAMA, sliding_window_unsupported, unsupported_rope
from convert.gguf.archs.qwen2 import sliding_window_unused
from convert.gguf.hparams import (
    DECODER_HPARAMS,
    MOE_HPARAMS,
    ROPE_SCALING_HPARAMS,
    ModelConfig,
)
from convert.gguf.registry import Architecture, Check, register
from convert.gguf.tensors import MOE_BLOCK, Regroup, rename, split_tensor, stack_experts
from edge_ai.errors import EdgeAIError

# Per-expert tensors, then the transformers-5 fused layout.
EXPERT_REGROUP: tuple[Regroup, ...] = (
    stack_experts(),
    split_tensor(".experts.gate_up_proj", (".experts.gate_proj.weight", ".experts.up_proj.weight"), axis=1),
    rename(r"\.experts\.down_proj$", ".experts.down_proj.weight"),
)

SHARED_EXPERT_SHAPES = {
    T.FFN_GATE_SHEXP: lambda c: (c.positive_int("shared_expert_intermediate_size"), c.n_embd),
    T.FFN_UP_SHEXP: lambda c: (c.positive_int("shared_expert_intermediate_size"), c.n_embd),
    T.FFN_DOWN_SHEXP: lambda c: (c.n_embd, c.positive_int("shared_expert_intermediate_size")),
    T.FFN_GATE_INP_SHEXP: lambda c: (1, c.n_embd),
}


def routing(family: str, *, normalized: bool | None, default_norm: bool = False) -> Check:
    """Refuse what llama.cpp's `family` graph cannot run: dense layers, or (unless `normalized` is
    None: the family has no such option) a `norm_topk_prob` other than what llama.cpp does."""
    def check(config: ModelConfig) -> list[str]:
        n_expert = config.n_expert
        used = config.positive_int("num_experts_per_tok")
        if used > n_expert:
            raise EdgeAIError(f"config.json num_experts_per_tok {used} is more than the {n_expert} experts; "
                              "fix config.json")
        step = config.get("decoder_sparse_step", default=1)
        if step != 1 or config.get("mlp_only_layers"):
            raise EdgeAIError(f"config.json decoder_sparse_step={step} / mlp_only_layers="
                              f"{config.get('mlp_only_layers')} puts dense layers between the MoE layers, "
                              f"which llama.cpp's {family} does not support")
        norm = config.get("norm_topk_prob", default=default_norm)
        if normalized is not None and bool(norm) != normalized:
            raise EdgeAIError(f"config.json norm_topk_prob={str(bool(norm)).lower()}: llama.cpp's {family} always "
                              f"{'renormalizes' if normalized else 'keeps'} the top-k expert weights"
                              f"{'' if normalized else ' unnormalized'}, so it would compute a different model")
        return []
    return check


def output_required(family: str) -> Check:
    def check(config: ModelConfig) -> list[str]:
        if config.tie_word_embeddings:
            raise EdgeAIError(f"config.json tie_word_embeddings=true: llama.cpp's {family} needs a separate "
                              "output matrix (lm_head)")
        return []
    return check


def shared_expert(config: ModelConfig) -> list[str]:
    if not config.get("shared_expert_intermediate_size"):
        raise EdgeAIError("config.json has no shared_expert_intermediate_size: llama.cpp's qwen2moe needs the "
                          "shared expert")
    return []


QWEN2MOE = register(Architecture(
    gguf_arch=MODEL_ARCH.QWEN2MOE,
    hf_architectures=("Qwen2MoeForCausalLM",),
    model_types=("qwen2_moe",),
    hparams=DECODER_HPARAMS + ROPE_SCALING_HPARAMS + MOE_HPARAMS,
    block_tensors=MOE_BLOCK + (T.FFN_GATE_INP_SHEXP, T.FFN_GATE_SHEXP, T.FFN_UP_SHEXP, T.FFN_DOWN_SHEXP),
    shapes=SHARED_EXPERT_SHAPES,
    regroup=EXPERT_REGROUP,
    checks=(routing("qwen2moe", normalized=False, default_norm=False), shared_expert,
            output_required("qwen2moe"), sliding_window_unused, unsupported_rope),
))

QWEN3MOE = register(Architecture(
    gguf_arch=MODEL_ARCH.QWEN3MOE,
    hf_architectures=("Qwen3MoeForCausalLM",),
    model_types=("qwen3_moe",),
    hparams=DECODER_HPARAMS + ROPE_SCALING_HPARAMS + MOE_HPARAMS,
    block_tensors=MOE_BLOCK + (T.ATTN_Q_NORM, T.ATTN_K_NORM),
    regroup=EXPERT_REGROUP,
    checks=(routing("qwen3moe", normalized=True, default_norm=False), sliding_window_unused, unsupported_rope),
))

MIXTRAL = register(Architecture(
    gguf_arch=MODEL_ARCH.LLAMA,
    hf_architectures=("MixtralForCausalLM",),
    model_types=("mixtral",),
    hparams=LLAMA.hparams + MOE_HPARAMS,
    block_tensors=MOE_BLOCK,
    transforms=LLAMA.transforms,
    extra_tensors=LLAMA.extra_tensors,
    regroup=EXPERT_REGROUP,
    checks=(routing("llama", normalized=None), sliding_window_unsupported, unsupported_rope),
))

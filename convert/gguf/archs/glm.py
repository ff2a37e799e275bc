"""GLM-4.5 / GLM-4.5-Air (`Glm4MoeForCausalLM`), llama.cpp architecture "glm4moe".

DeepSeek-V3's mixture of experts (leading dense layers, sigmoid routing with an expert-score
correction bias, optional groups, shared experts; see deepseek.py) under plain grouped-query
attention with Q/K/V biases, partial NeoX RoPE (`partial_rotary_factor`, half the head by default)
and optional per-head q/k norms (`use_qk_norm`). The norm before the MLP is llama.cpp's
`post_attention_norm`. The multi-token-prediction layer past num_hidden_layers is dropped.

GLM's special tokens are set as llama.cpp's converter sets them: `[gMASK]` is the BOS, `<|user|>`
ends a turn (EOT), `<|observation|>` ends a tool call (EOM) and `<|endoftext|>` is the unknown token.
"""

from __future__ import annotations

from gguf.constants import MODEL_ARCH, ExpertGatingFuncType, Keys
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.archs.deepseek import (
    CORRECTION_BIAS_NAME,
    SHARED_EXPERTS_SHAPES,
    drop_extra_layers,
    group_count,
    grouped_experts,
    leading_dense,
)
from convert.gguf.archs.llama import unsupported_rope
from convert.gguf.archs.moe import EXPERT_REGROUP
from convert.gguf.hparams import (
    BOOL,
    DECODER_HPARAMS,
    F32,
    ROPE_SCALING_HPARAMS,
    U32,
    HParam,
    ModelConfig,
    routed_expert_hparams,
)
from convert.gguf.registry import Architecture, register
from convert.gguf.vocab import Vocabulary
from edge_ai.errors import EdgeAIError

# llama.cpp's special-token roles for GLM, by token text (as its converter's _set_vocab_glm).
GLM_SPECIAL_TOKENS = {"bos": "[gMASK]", "eot": "<|user|>", "eom": "<|observation|>", "unk": "<|endoftext|>"}


def glm_checks(config: ModelConfig) -> list[str]:
    leading_dense(config)
    grouped_experts(config)
    if config.get("n_shared_experts") is None:
        raise EdgeAIError("config.json has no n_shared_experts (0 for none); fix config.json")
    return unsupported_rope(config)


def glm_layer_tensors(config: ModelConfig, bid: int) -> tuple[T, ...]:
    norms = (T.ATTN_Q_NORM, T.ATTN_K_NORM) if config.get("use_qk_norm") else ()
    if bid < leading_dense(config):
        return norms + (T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)
    shared = (T.FFN_GATE_SHEXP, T.FFN_UP_SHEXP, T.FFN_DOWN_SHEXP) if config.get("n_shared_experts") else ()
    return norms + (T.FFN_GATE_INP, T.FFN_EXP_PROBS_B, T.FFN_GATE_EXP, T.FFN_UP_EXP, T.FFN_DOWN_EXP) + shared


def glm_special_tokens(vocab: Vocabulary, config: ModelConfig) -> None:
    """Point llama.cpp's BOS/EOT/EOM/UNK at GLM's tokens (a tokenizer without one keeps its own)."""
    ids = {token: i for i, token in enumerate(vocab.tokens)}
    missing = []
    for role, token in GLM_SPECIAL_TOKENS.items():
        if token in ids:
            vocab.special[role] = ids[token]
        else:
            missing.append(token)
    if missing:
        vocab.warnings.append(f"the tokenizer has no {', '.join(missing)}: GLM chat turns may not end where they should")


GLM4_MOE = register(Architecture(
    gguf_arch=MODEL_ARCH.GLM4_MOE,
    hf_architectures=("Glm4MoeForCausalLM",),
    model_types=("glm4_moe",),
    hparams=DECODER_HPARAMS + ROPE_SCALING_HPARAMS + routed_expert_hparams() + (
        HParam(Keys.LLM.EXPERT_SHARED_COUNT, ("n_shared_experts",), U32, required=True),
        HParam(Keys.LLM.LEADING_DENSE_BLOCK_COUNT, leading_dense, U32),
        HParam(Keys.LLM.EXPERT_GATING_FUNC, lambda c: int(ExpertGatingFuncType.SIGMOID), U32),
        HParam(Keys.LLM.EXPERT_WEIGHTS_SCALE, lambda c: c.defaulted("routed_scaling_factor", default=1.0), F32),
        HParam(Keys.LLM.EXPERT_WEIGHTS_NORM, lambda c: bool(c.defaulted("norm_topk_prob", default=True)), BOOL),
        HParam(Keys.LLM.EXPERT_GROUP_COUNT, group_count("n_group"), U32),
        HParam(Keys.LLM.EXPERT_GROUP_USED_COUNT, group_count("topk_group"), U32),
    ),
    block_tensors=(T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_POST_NORM),
    layer_tensors=glm_layer_tensors,
    shapes={**SHARED_EXPERTS_SHAPES, T.ATTN_POST_NORM: lambda c: (c.n_embd,)},
    regroup=(drop_extra_layers(), CORRECTION_BIAS_NAME) + EXPERT_REGROUP,
    checks=(glm_checks,),
    vocab_hook=glm_special_tokens,
))

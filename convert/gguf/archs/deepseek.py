"""DeepSeek-V2 / V2-Lite / V3 (`DeepseekV2ForCausalLM`, `DeepseekV3ForCausalLM`), llama.cpp "deepseek2".

Multi-head latent attention (MLA): queries come from `q_proj` (V2-Lite) or the low-rank pair
`q_a_proj` -> `q_a_layernorm` -> `q_b_proj` (q_lora_rank); keys and values from one compressed
latent, `kv_a_proj_with_mqa` (kv_lora_rank values + one shared RoPE key of qk_rope_head_dim) ->
`kv_a_layernorm` -> `kv_b_proj`. llama.cpp runs MLA with the absorption trick: `kv_b_proj`
[n_head x (qk_nope + v), kv_lora] is cut per head into `attn_k_b` (transposed: [n_head, kv_lora,
qk_nope]) and `attn_v_b` ([n_head, v, kv_lora]), and what it caches per token is the latent and
the RoPE key, kv_lora_rank + qk_rope_head_dim values for all heads (an MQA with one KV head of that
width: `head_count_kv` 1, `key_length` kv_lora + rope, `value_length` kv_lora), not 2 x heads x head_dim.

RoPE acts on the interleaved pairs (GPT-J style, llama.cpp's normal RoPE) in both releases, so
nothing is permuted; a V3 config with `rope_interleave: false` is refused. The first
`first_k_dense_replace` layers have a dense MLP, the rest routed experts (stacked) plus
`n_shared_experts` shared ones fused into one `ffn_*_shexp`. V2 routes by softmax, V3 by sigmoid
with a per-expert correction bias (`e_score_correction_bias` -> `exp_probs_b`) and group-limited
top-k (`n_group`, `topk_group`); `norm_topk_prob` and `routed_scaling_factor` are keys. Layers past
num_hidden_layers (V3's multi-token-prediction block) are not part of the model and are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from gguf.constants import MODEL_ARCH, ExpertGatingFuncType, Keys
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.archs.moe import EXPERT_REGROUP
from convert.gguf.hparams import (
    BOOL,
    DECODER_HPARAMS,
    F32,
    ROPE_SCALING_HPARAMS,
    U32,
    HParam,
    ModelConfig,
    replace_rows,
    routed_expert_hparams,
)
from convert.gguf.registry import Architecture, register
from convert.gguf.tensors import Loader, Regroup, Tensors, VirtualTensor, rename
from edge_ai.errors import EdgeAIError

# ---------------------------------------------------------------- config

def mla_dims(config: ModelConfig) -> tuple[int, int, int, int]:
    """(kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim), checked against each other."""
    kv_lora = config.positive_int("kv_lora_rank")
    nope = config.positive_int("qk_nope_head_dim")
    rope = config.positive_int("qk_rope_head_dim")
    v = config.positive_int("v_head_dim")
    if rope % 2:
        raise EdgeAIError(f"config.json qk_rope_head_dim {rope} is odd; RoPE rotates pairs, fix config.json")
    qk = config.get("qk_head_dim")
    if qk is not None and qk != nope + rope:
        raise EdgeAIError(f"config.json qk_head_dim {qk} is not qk_nope_head_dim {nope} + qk_rope_head_dim {rope}; "
                          "fix config.json")
    return kv_lora, nope, rope, v


def q_lora_rank(config: ModelConfig) -> int:
    """0 for V2-Lite's plain q_proj (llama.cpp reads 0 as "no q LoRA")."""
    return 0 if config.get("q_lora_rank") is None else config.positive_int("q_lora_rank")


def leading_dense(config: ModelConfig) -> int:
    value = config.get("first_k_dense_replace", default=0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= config.n_layer:
        raise EdgeAIError(f"config.json first_k_dense_replace is {value!r}, expected 0..{config.n_layer}; "
                          "fix config.json")
    return value


def is_v3(config: ModelConfig) -> bool:
    return config.get("model_type") == "deepseek_v3" or "DeepseekV3ForCausalLM" in (config.get("architectures") or [])


def deepseek_checks(config: ModelConfig) -> list[str]:
    warnings = []
    mla_dims(config)
    q_lora_rank(config)
    leading_dense(config)
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim != config.positive_int("qk_rope_head_dim"):
        raise EdgeAIError(f"config.json head_dim {head_dim} differs from qk_rope_head_dim "
                          f"{config.get('qk_rope_head_dim')} (the rotary width of MLA); fix config.json")
    if config.get("rope_interleave") is False:
        raise EdgeAIError("config.json rope_interleave=false: llama.cpp's deepseek2 rotates interleaved pairs, "
                          "so it would compute a different model")
    if config.get("attention_bias") is True:
        raise EdgeAIError("config.json attention_bias=true: llama.cpp's deepseek2 has no attention biases")
    if not config.get("n_shared_experts"):
        raise EdgeAIError("config.json has no n_shared_experts: llama.cpp's deepseek2 needs the shared experts")
    if grouped_experts(config) and not is_v3(config) and config.get("topk_method") == "group_limited_greedy":
        warnings.append("DeepSeek-V2 ranks expert groups by their best expert, llama.cpp by their best two: "
                        "a token may be routed to other experts")
    return warnings


def grouped_experts(config: ModelConfig) -> bool:
    """Whether routing is group-limited (n_group > 1), after checking the expert counts it relies on."""
    n_expert, used = config.n_expert, config.positive_int("num_experts_per_tok")
    if used > n_expert:
        raise EdgeAIError(f"config.json num_experts_per_tok {used} is more than the {n_expert} experts; fix config.json")
    groups = config.get("n_group")
    if not isinstance(groups, int) or groups <= 1:
        return False
    if n_expert % groups:
        raise EdgeAIError(f"config.json n_group {groups} does not divide the {n_expert} experts; fix config.json")
    return True


def group_count(key: str) -> Callable[[ModelConfig], int | None]:
    """`n_group` / `topk_group`, written only when the experts really are grouped (n_group > 1)."""
    def get(config: ModelConfig) -> int | None:
        return config.get(key) if grouped_experts(config) else None
    return get


def _yarn_log_mul(config: ModelConfig) -> float | None:
    mscale_all = config.rope.get("mscale_all_dim")
    return 0.1 * float(mscale_all) if config.rope["rope_type"] == "yarn" and mscale_all else None


DEEPSEEK_HPARAMS: tuple[HParam, ...] = replace_rows(
    DECODER_HPARAMS + ROPE_SCALING_HPARAMS,
    HParam(Keys.Attention.HEAD_COUNT_KV, lambda c: 1, U32),
    HParam(Keys.Attention.KEY_LENGTH, lambda c: mla_dims(c)[0] + mla_dims(c)[2], U32),
    HParam(Keys.Attention.VALUE_LENGTH, lambda c: mla_dims(c)[0], U32),
    HParam(Keys.Rope.DIMENSION_COUNT, lambda c: mla_dims(c)[2], U32),
    HParam(Keys.Attention.KEY_LENGTH_MLA, lambda c: mla_dims(c)[1] + mla_dims(c)[2], U32),
    HParam(Keys.Attention.VALUE_LENGTH_MLA, lambda c: mla_dims(c)[3], U32),
    HParam(Keys.Attention.Q_LORA_RANK, q_lora_rank, U32),
    HParam(Keys.Attention.KV_LORA_RANK, lambda c: mla_dims(c)[0], U32),
    HParam(Keys.LLM.LEADING_DENSE_BLOCK_COUNT, leading_dense, U32),
    *routed_expert_hparams(),
    HParam(Keys.LLM.EXPERT_SHARED_COUNT, ("n_shared_experts",), U32, required=True),
    HParam(Keys.LLM.EXPERT_WEIGHTS_SCALE, lambda c: c.defaulted("routed_scaling_factor", default=1.0), F32),
    HParam(Keys.LLM.EXPERT_WEIGHTS_NORM, lambda c: bool(c.defaulted("norm_topk_prob", default=False)), BOOL),
    HParam(Keys.LLM.EXPERT_GATING_FUNC, lambda c: int(ExpertGatingFuncType.SIGMOID if is_v3(c)
                                                      else ExpertGatingFuncType.SOFTMAX), U32),
    HParam(Keys.LLM.EXPERT_GROUP_COUNT, group_count("n_group"), U32),
    HParam(Keys.LLM.EXPERT_GROUP_USED_COUNT, group_count("topk_group"), U32),
    HParam(Keys.Rope.SCALING_YARN_LOG_MUL, _yarn_log_mul, F32),
)


# ---------------------------------------------------------------- tensors

def split_kv_b() -> Regroup:
    """`kv_b_proj` [n_head x (nope + v), kv_lora] -> `k_b_proj` [n_head, kv_lora, nope] (transposed
    per head) and `v_b_proj` [n_head, v, kv_lora], as llama.cpp's absorbed MLA multiplies them."""
    def regroup(tensors: Tensors, config: ModelConfig) -> Tensors:
        out: Tensors = {}
        for name, tensor in tensors.items():
            if not name.endswith(".kv_b_proj.weight"):
                out[name] = tensor
                continue
            kv_lora, nope, _, v = mla_dims(config)
            heads = config.n_head
            if tensor.shape != (heads * (nope + v), kv_lora):
                raise EdgeAIError(f"tensor {name} in {tensor.where} has shape {list(tensor.shape)} but config.json "
                                  f"implies {[heads * (nope + v), kv_lora]} (num_attention_heads x (qk_nope_head_dim "
                                  "+ v_head_dim), kv_lora_rank); the weights do not match config.json")
            base = name[: -len(".kv_b_proj.weight")]
            out[base + ".k_b_proj.weight"] = VirtualTensor(
                base + ".k_b_proj.weight", (heads, kv_lora, nope), tensor.sources,
                _kv_b_part(tensor, heads, nope, v, key=True))
            out[base + ".v_b_proj.weight"] = VirtualTensor(
                base + ".v_b_proj.weight", (heads, v, kv_lora), tensor.sources,
                _kv_b_part(tensor, heads, nope, v, key=False))
        return out
    return regroup


def _kv_b_part(tensor: VirtualTensor, heads: int, nope: int, v: int, *, key: bool) -> Loader:
    def load() -> tuple[np.ndarray, str]:
        raw, dtype = tensor.load()
        per_head = raw.reshape(heads, nope + v, raw.shape[-1])
        part = per_head[:, :nope, :].transpose(0, 2, 1) if key else per_head[:, nope:, :]
        return np.ascontiguousarray(part), dtype
    return load


def drop_extra_layers() -> Regroup:
    """Drop `model.layers.N` for N >= num_hidden_layers: V3's multi-token-prediction block, which
    llama.cpp's deepseek2 does not run (llama.cpp's converter drops it too)."""
    def regroup(tensors: Tensors, config: ModelConfig) -> Tensors:
        if not config.get("num_nextn_predict_layers"):
            return tensors
        layer = re.compile(r"^model\.layers\.(\d+)\.")
        return {n: t for n, t in tensors.items()
                if not ((m := layer.match(n)) and int(m.group(1)) >= config.n_layer)}
    return regroup


def _layer_tensors(config: ModelConfig, bid: int) -> tuple[T, ...]:
    attention = (T.ATTN_Q,) if not q_lora_rank(config) else (T.ATTN_Q_A, T.ATTN_Q_A_NORM, T.ATTN_Q_B)
    if bid < leading_dense(config):
        return attention + (T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)
    routing = (T.FFN_EXP_PROBS_B,) if is_v3(config) else ()
    return attention + routing + (T.FFN_GATE_INP, T.FFN_GATE_EXP, T.FFN_UP_EXP, T.FFN_DOWN_EXP,
                                  T.FFN_GATE_SHEXP, T.FFN_UP_SHEXP, T.FFN_DOWN_SHEXP)


def shared_ff(c: ModelConfig) -> int:
    return c.positive_int("moe_intermediate_size") * c.positive_int("n_shared_experts")


def _q_width(c: ModelConfig) -> int:
    _, nope, rope, _ = mla_dims(c)
    return c.n_head * (nope + rope)


MLA_SHAPES = {
    T.ATTN_Q: lambda c: (_q_width(c), c.n_embd),
    T.ATTN_Q_A: lambda c: (q_lora_rank(c), c.n_embd),
    T.ATTN_Q_A_NORM: lambda c: (q_lora_rank(c),),
    T.ATTN_Q_B: lambda c: (_q_width(c), q_lora_rank(c)),
    T.ATTN_KV_A_MQA: lambda c: (mla_dims(c)[0] + mla_dims(c)[2], c.n_embd),
    T.ATTN_KV_A_NORM: lambda c: (mla_dims(c)[0],),
    T.ATTN_K_B: lambda c: (c.n_head, mla_dims(c)[0], mla_dims(c)[1]),
    T.ATTN_V_B: lambda c: (c.n_head, mla_dims(c)[3], mla_dims(c)[0]),
    T.ATTN_OUT: lambda c: (c.n_embd, c.n_head * mla_dims(c)[3]),
}

# Shared experts fused into one MLP of n_shared_experts x moe_intermediate_size (DeepSeek, GLM-4.5).
SHARED_EXPERTS_SHAPES = {
    T.FFN_GATE_SHEXP: lambda c: (shared_ff(c), c.n_embd),
    T.FFN_UP_SHEXP: lambda c: (shared_ff(c), c.n_embd),
    T.FFN_DOWN_SHEXP: lambda c: (c.n_embd, shared_ff(c)),
    T.FFN_EXP_PROBS_B: lambda c: (c.n_expert, 1),  # a bias: the last dimension is dropped
}
CORRECTION_BIAS_NAME = rename(r"\.e_score_correction_bias$", ".e_score_correction.bias")  # gguf-py's name

DEEPSEEK2 = register(Architecture(
    gguf_arch=MODEL_ARCH.DEEPSEEK2,
    hf_architectures=("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM"),
    model_types=("deepseek_v2", "deepseek_v3"),
    hparams=DEEPSEEK_HPARAMS,
    block_tensors=(T.ATTN_NORM, T.ATTN_KV_A_MQA, T.ATTN_KV_A_NORM, T.ATTN_K_B, T.ATTN_V_B, T.ATTN_OUT, T.FFN_NORM),
    layer_tensors=_layer_tensors,
    shapes={**MLA_SHAPES, **SHARED_EXPERTS_SHAPES},
    regroup=(drop_extra_layers(), CORRECTION_BIAS_NAME, split_kv_b()) + EXPERT_REGROUP,
    checks=(deepseek_checks,),
))

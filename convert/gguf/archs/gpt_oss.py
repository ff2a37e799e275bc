"""gpt-oss (`GptOssForCausalLM`, OpenAI's 20B / 120B), llama.cpp architecture "gpt-oss".

Attention with Q/K/V/O biases and a learned per-head sink logit (`self_attn.sinks` ->
`attn_sinks`), alternating sliding-window and full layers (`layer_types`, written per layer),
NeoX RoPE with YaRN. Experts with biases, routed by softmax over the top-k router logits (router
bias included), and a clamped SwiGLU (alpha 1.702, limit 7, as llama.cpp hard-codes them).

Experts come in two layouts, both accepted:
- released checkpoints: MXFP4, `mlp.experts.{gate_up,down}_proj_blocks` (uint8 [E, rows, cols/32,
  16], two 4-bit values a byte, low nibble first) with `..._scales` (uint8 E8M0 [E, rows, cols/32]).
  They are repacked into GGML's MXFP4 blocks (scale byte, then 16 bytes holding values j and j+16)
  and written as MXFP4 whatever the outtype: a block at a time, never expanded to float.
- dequantized checkpoints (what transformers saves): `gate_up_proj` [E, n_embd, 2 x n_ff] and
  `down_proj` [E, n_ff, n_embd] (input-major, transposed here).
Either way gate and up are interleaved (gate = even rows, up = odd rows), as are their biases.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
from gguf.constants import MODEL_ARCH
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.archs.gemma import sliding_window_pattern
from convert.gguf.archs.moe import output_required
from convert.gguf.hparams import (
    DECODER_HPARAMS,
    ROPE_SCALING_HPARAMS,
    ModelConfig,
    routed_expert_hparams,
    sliding_window_hparam,
)
from convert.gguf.registry import Architecture, register
from convert.gguf.tensors import Loader, Tensors, VirtualTensor, rename
from edge_ai.errors import EdgeAIError

MXFP4_BLOCK = 32  # values per block (and per E8M0 scale)
_EXPERTS = re.compile(r"^(?P<prefix>.+\.mlp\.experts)\.(?P<proj>gate_up_proj|down_proj)(?P<part>_blocks|_scales|_bias)?$")


def repack_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Hugging Face MXFP4 (blocks [..., G, 16]: value 2k in the low nibble of byte k, 2k+1 in the
    high one; scales [..., G]) as GGML MXFP4 bytes [..., G x 17]: per block the scale byte, then
    16 bytes whose low nibble is value j and high nibble value j + 16."""
    values = np.empty((*blocks.shape[:-1], MXFP4_BLOCK), dtype=np.uint8)
    values[..., 0::2] = blocks & 0x0F
    values[..., 1::2] = blocks >> 4
    packed = values[..., :16] | (values[..., 16:] << 4)
    out = np.concatenate([scales[..., None], packed], axis=-1)
    return out.reshape(*blocks.shape[:-2], blocks.shape[-2] * (MXFP4_BLOCK // 2 + 1))


def _mxfp4_part(blocks: VirtualTensor, scales: VirtualTensor, rows: slice) -> Loader:
    def load() -> tuple[np.ndarray, str]:
        b, _ = blocks.load()
        s, _ = scales.load()
        return np.ascontiguousarray(repack_mxfp4(b[:, rows], s[:, rows])), "MXFP4"
    return load


def _dense_part(tensor: VirtualTensor, rows: slice) -> Loader:
    """One of gate/up (rows of the transposed [E, out, in] weight) or the whole transposed down."""
    def load() -> tuple[np.ndarray, str]:
        raw, dtype = tensor.load()
        return np.ascontiguousarray(raw.swapaxes(1, 2)[:, rows]), dtype
    return load


def _bias_part(tensor: VirtualTensor, rows: slice) -> Loader:
    def load() -> tuple[np.ndarray, str]:
        raw, dtype = tensor.load()
        return np.ascontiguousarray(raw[:, rows]), dtype
    return load


GATE_ROWS, UP_ROWS, ALL_ROWS = slice(0, None, 2), slice(1, None, 2), slice(None)


def split_experts(tensors: Tensors, config: ModelConfig) -> Tensors:
    """gpt-oss experts (MXFP4 or dequantized, see the module doc) as `experts.{gate,up,down}_proj.{weight,bias}`."""
    out: Tensors = {}
    groups: dict[tuple[str, str], dict[str, VirtualTensor]] = {}
    for name, tensor in tensors.items():
        m = _EXPERTS.match(name)
        if m is None:
            out[name] = tensor
        else:
            groups.setdefault((m["prefix"], m["proj"]), {})[m["part"] or ""] = tensor
    for (prefix, proj), parts in groups.items():
        gate_up = proj == "gate_up_proj"
        targets = (("gate_proj", GATE_ROWS), ("up_proj", UP_ROWS)) if gate_up else (("down_proj", ALL_ROWS),)
        if "_bias" in parts:
            bias = parts.pop("_bias")
            for target, rows in targets:
                shape = (bias.shape[0], len(range(bias.shape[1])[rows]), *bias.shape[2:])
                out[f"{prefix}.{target}.bias"] = VirtualTensor(f"{prefix}.{target}.bias", shape, bias.sources,
                                                               _bias_part(bias, rows))
        if "" in parts and len(parts) == 1:
            dense = parts[""]
            if len(dense.shape) != 3:
                raise EdgeAIError(f"tensor {dense.name} in {dense.where} has shape {list(dense.shape)}, expected "
                                  "[experts, in, out]; the checkpoint is corrupt")
            for target, rows in targets:
                n_out = len(range(dense.shape[2])[rows])
                out[f"{prefix}.{target}.weight"] = VirtualTensor(
                    f"{prefix}.{target}.weight", (dense.shape[0], n_out, dense.shape[1]), dense.sources,
                    _dense_part(dense, rows))
        elif parts:
            blocks, scales = _mxfp4_pair(prefix, proj, parts)
            n_expert, n_rows, n_groups, _ = blocks.shape
            for target, rows in targets:
                out[f"{prefix}.{target}.weight"] = VirtualTensor(
                    f"{prefix}.{target}.weight", (n_expert, len(range(n_rows)[rows]), n_groups * MXFP4_BLOCK),
                    blocks.sources + scales.sources, _mxfp4_part(blocks, scales, rows), stored_as="MXFP4")
    return out


def _mxfp4_pair(prefix: str, proj: str, parts: dict[str, VirtualTensor]) -> tuple[VirtualTensor, VirtualTensor]:
    """The `_blocks` and `_scales` of one projection, checked against each other."""
    blocks, scales = parts.get("_blocks"), parts.get("_scales")
    if "" in parts:
        raise EdgeAIError(f"the checkpoint has both {prefix}.{proj} and its MXFP4 blocks/scales; "
                          "remove one of the two layouts")
    if blocks is None or scales is None:
        missing, present = (f"{proj}_scales", blocks) if scales is None else (f"{proj}_blocks", scales)
        raise EdgeAIError(f"tensor {prefix}.{missing} is missing (found {present.name} in {present.where}); "
                          "MXFP4 experts need both blocks and scales, re-download the model")
    for tensor in (blocks, scales):
        if {s.dtype for s in tensor.sources} != {"U8"}:
            raise EdgeAIError(f"tensor {tensor.name} in {tensor.where} is not uint8 as MXFP4 {tensor.name[-6:]} "
                              "are; the checkpoint is corrupt")
    if len(blocks.shape) != 4 or blocks.shape[-1] != MXFP4_BLOCK // 2 or blocks.shape[:-1] != scales.shape:
        raise EdgeAIError(f"tensor {scales.name} has shape {list(scales.shape)} but {blocks.name} has "
                          f"{list(blocks.shape)}: MXFP4 needs one scale per 16-byte block "
                          f"([experts, rows, blocks] and [experts, rows, blocks, 16]); the checkpoint is corrupt")
    return blocks, scales


def gpt_oss_checks(config: ModelConfig) -> list[str]:
    warnings = []
    types = config.get("layer_types")
    if types is not None and (not isinstance(types, list) or len(types) != config.n_layer or
                              set(types) - {"sliding_attention", "full_attention"}):
        raise EdgeAIError(f"config.json layer_types must list {config.n_layer} entries of 'sliding_attention' "
                          "or 'full_attention'; fix config.json")
    used, n_expert = config.positive_int("num_experts_per_tok"), config.n_expert
    if used > n_expert:
        raise EdgeAIError(f"config.json num_experts_per_tok {used} is more than the {n_expert} experts; fix config.json")
    if config.rope["rope_type"] == "yarn" and config.rope.get("truncate") is False:
        low, high = yarn_ramp(config)
        if low != math.floor(low) or high != math.ceil(high):
            warnings.append(f"config.json rope_scaling truncate=false: YaRN's ramp runs over rotary dimensions "
                            f"{low:.2f}..{high:.2f} in transformers, {math.floor(low)}..{math.ceil(high)} in "
                            "llama.cpp (it rounds the ends), so the frequencies in between differ and outputs "
                            "differ from transformers' (as with llama.cpp's own converter)")
    elif config.rope["rope_type"] not in ("default", "yarn"):
        warnings.append(f"RoPE type {config.rope['rope_type']!r} is not supported by llama.cpp's gpt-oss; "
                        "long-context outputs will differ")
    return warnings


def yarn_ramp(config: ModelConfig) -> tuple[float, float]:
    """Where YaRN's interpolation ramp starts and ends, in rotary dimensions, before any rounding
    (transformers' find_correction_range; llama.cpp floors the start and ceils the end)."""
    dims, base = config.rope_dims, config.rope_theta
    original = float(config.rope.get("original_max_position_embeddings") or config.require("max_position_embeddings"))

    def dim(rotations: float) -> float:
        return dims * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))
    low = max(dim(float(config.rope.get("beta_fast", 32.0))), 0.0)
    return low, min(dim(float(config.rope.get("beta_slow", 1.0))), dims - 1.0)


def _ff_exp(config: ModelConfig) -> tuple[int, int, int]:
    return (config.n_expert, config.n_ff, config.n_embd)


EXPERT_SHAPES: dict[T, Callable[[ModelConfig], tuple[int, ...]]] = {
    T.FFN_GATE_EXP: _ff_exp,
    T.FFN_UP_EXP: _ff_exp,
    T.FFN_DOWN_EXP: lambda c: (c.n_expert, c.n_embd, c.n_ff),
    T.ATTN_SINKS: lambda c: (c.n_head,),
    T.ATTN_POST_NORM: lambda c: (c.n_embd,),
}

GPT_OSS = register(Architecture(
    gguf_arch=MODEL_ARCH.GPT_OSS,
    hf_architectures=("GptOssForCausalLM",),
    model_types=("gpt_oss",),
    hparams=DECODER_HPARAMS + ROPE_SCALING_HPARAMS + routed_expert_hparams(lambda c: c.n_ff) + (
        sliding_window_hparam(),
        sliding_window_pattern(2),
    ),
    block_tensors=(T.ATTN_NORM, T.ATTN_POST_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_SINKS,
                   T.FFN_GATE_INP, T.FFN_GATE_EXP, T.FFN_UP_EXP, T.FFN_DOWN_EXP),
    shapes=EXPERT_SHAPES,
    regroup=(rename(r"\.self_attn\.sinks$", ".self_attn.sinks.weight"), split_experts),
    checks=(gpt_oss_checks, output_required("gpt-oss")),
))

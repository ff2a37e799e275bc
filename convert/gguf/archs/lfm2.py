"""LFM2 (`Lfm2ForCausalLM`, Liquid AI's 350M-2.6B), llama.cpp architecture "lfm2".

A hybrid: config.json `layer_types` makes each layer either "full_attention" (GQA with per-head
q/k norms, NeoX RoPE) or "conv", a gated short convolution (`conv.in_proj` to 3 x n_embd, a
depthwise causal convolution over the last `conv_L_cache` positions, `conv.out_proj`). Both kinds
have the same SwiGLU MLP (`feed_forward.w1/w3/w2`). llama.cpp tells them apart by
`attention.head_count_kv`, written per layer (0 for a convolution layer); what a convolution layer
keeps between tokens is `shortconv.l_cache` - 1 past inputs, not a KV cache.

The MLP width is not `intermediate_size` as such: with `block_auto_adjust_ff_dim` it is 2/3 of it,
times `block_ffn_dim_multiplier`, rounded up to `block_multiple_of` (as transformers builds it).
The convolution weight [n_embd, 1, L] is stored as [n_embd, L]; the norm before the output is
`model.embedding_norm` (llama.cpp's `token_embd_norm`). A layer whose tensors are not those of
its `layer_types` entry is refused naming both.
"""

from __future__ import annotations

import re

import numpy as np
from gguf.constants import MODEL_ARCH, GGUFValueType, Keys
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.archs.llama import unsupported_rope
from convert.gguf.hparams import DECODER_HPARAMS, F32, U32, HParam, ModelConfig, replace_rows
from convert.gguf.registry import Architecture, register
from convert.gguf.tensors import Tensors, VirtualTensor
from edge_ai.errors import EdgeAIError

LAYER_KINDS = {"full_attention": "self_attn", "conv": "conv"}  # layer_types entry -> its tensors' module


def layer_types(config: ModelConfig) -> list[str]:
    types = config.get("layer_types")
    if types is None:
        full = config.get("full_attn_idxs", default=list(range(config.n_layer)))
        types = ["full_attention" if i in full else "conv" for i in range(config.n_layer)]
    if not isinstance(types, list) or len(types) != config.n_layer:
        raise EdgeAIError(f"config.json layer_types must list {config.n_layer} entries (one per layer); fix config.json")
    unknown = [t for t in types if t not in LAYER_KINDS]
    if unknown:
        raise EdgeAIError(f"config.json layer_types has {unknown[0]!r}; llama.cpp's lfm2 only has "
                          "'full_attention' and 'conv' layers")
    return types


def ff_dim(config: ModelConfig) -> int:
    """The MLP width transformers builds from intermediate_size (block_ff_dim)."""
    ff = config.positive_int("block_ff_dim", "intermediate_size")
    if config.get("block_auto_adjust_ff_dim", default=True):
        ff = int(2 * ff / 3)
        multiplier = config.get("block_ffn_dim_multiplier")
        if multiplier is not None:
            ff = int(multiplier * ff)
        step = config.positive_int("block_multiple_of")
        ff = step * ((ff + step - 1) // step)
    return ff


def lfm2_checks(config: ModelConfig) -> list[str]:
    layer_types(config)
    if config.get("conv_bias") is True:
        raise EdgeAIError("config.json conv_bias=true: llama.cpp's lfm2 has no convolution biases")
    return unsupported_rope(config)


def match_layer_types(tensors: Tensors, config: ModelConfig) -> Tensors:
    """Each layer's tensors are those of its layer_types entry; squeeze the conv weight to 2-D."""
    types = layer_types(config)
    block = re.compile(r"^model\.layers\.(\d+)\.(self_attn|conv)\.")
    out: Tensors = {}
    for name, tensor in tensors.items():
        m = block.match(name)
        if m and int(m.group(1)) < len(types) and LAYER_KINDS[types[int(m.group(1))]] != m.group(2):
            kind = "an attention" if m.group(2) == "self_attn" else "a convolution"
            raise EdgeAIError(f"tensor {name} in {tensor.where} is {kind} weight but config.json layer_types "
                              f"makes layer {m.group(1)} {types[int(m.group(1))]!r}; the checkpoint does not "
                              "match config.json")
        if name.endswith(".conv.conv.weight") and len(tensor.shape) == 3 and tensor.shape[1] == 1:
            tensor = VirtualTensor(name, (tensor.shape[0], tensor.shape[2]), tensor.sources,
                                   lambda t=tensor: _squeezed(t))
        out[name] = tensor
    return out


def _squeezed(tensor: VirtualTensor) -> tuple[np.ndarray, str]:
    raw, dtype = tensor.load()
    return raw.reshape(raw.shape[0], raw.shape[2]), dtype


def lfm2_layer_tensors(config: ModelConfig, bid: int) -> tuple[T, ...]:
    if layer_types(config)[bid] == "conv":
        return (T.SHORTCONV_CONV, T.SHORTCONV_INPROJ, T.SHORTCONV_OUTPROJ)
    return (T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_Q_NORM, T.ATTN_K_NORM)


def _kv_heads(config: ModelConfig) -> list[int]:
    return [config.n_head_kv if t == "full_attention" else 0 for t in layer_types(config)]


LFM2 = register(Architecture(
    gguf_arch=MODEL_ARCH.LFM2,
    hf_architectures=("Lfm2ForCausalLM",),
    model_types=("lfm2",),
    hparams=replace_rows(
        DECODER_HPARAMS,
        HParam(Keys.Attention.HEAD_COUNT_KV, _kv_heads, GGUFValueType.ARRAY),
        HParam(Keys.LLM.FEED_FORWARD_LENGTH, ff_dim, U32),
        HParam(Keys.Attention.LAYERNORM_RMS_EPS, ("norm_eps", "rms_norm_eps"), F32, required=True),
        HParam(Keys.ShortConv.L_CACHE, ("conv_L_cache",), U32, required=True),
    ),
    block_tensors=(T.ATTN_NORM, T.FFN_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN),
    final_norm=T.TOKEN_EMBD_NORM,
    layer_tensors=lfm2_layer_tensors,
    shapes={
        T.TOKEN_EMBD_NORM: lambda c: (c.n_embd,),
        T.FFN_GATE: lambda c: (ff_dim(c), c.n_embd),
        T.FFN_UP: lambda c: (ff_dim(c), c.n_embd),
        T.FFN_DOWN: lambda c: (c.n_embd, ff_dim(c)),
        T.SHORTCONV_CONV: lambda c: (c.n_embd, c.positive_int("conv_L_cache")),
        T.SHORTCONV_INPROJ: lambda c: (3 * c.n_embd, c.n_embd),
        T.SHORTCONV_OUTPROJ: lambda c: (c.n_embd, c.n_embd),
    },
    regroup=(match_layer_types,),
    checks=(lfm2_checks,),
))

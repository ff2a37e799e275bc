"""Gemma 2 and Gemma 3 (text), llama.cpp architectures "gemma2" and "gemma3".

- Gemma's RMSNorm computes x * (1 + w): every norm weight (block norms, final norm, Gemma 3's
  per-head q/k norms) gets +1, since llama.cpp multiplies by w.
- llama.cpp scales the embeddings by sqrt(n_embd) itself and reuses token_embd as the output.
- Both interleave sliding-window and full-attention layers: `attention.sliding_window_pattern` is
  written per layer (true = sliding) from config.json `layer_types` (or the older
  `sliding_window_pattern` period), so any layout runs as in transformers (llama.cpp's built-in
  default is Gemma 2: every 2nd layer full, Gemma 3: every 6th). Gemma 3's sliding layers have
  their own RoPE base, `rope.freq_base_swa`; RoPE scaling applies to the full layers only.
- llama.cpp scales queries by 1/sqrt(head_dim) (1/sqrt(n_embd/n_head) for the 27B sizes) where
  Hugging Face uses `query_pre_attn_scalar`**-0.5; a different scalar is folded into the weights
  (Gemma 2: `attn_q`, Gemma 3: `attn_q_norm`, applied after the q norm), so the result is exact.
- Gemma 2 soft-caps attention scores and final logits (`attn_logit_softcapping`,
  `final_logit_softcapping`); Gemma 3 only optionally the final logits.
- The embedding keeps every row of config.json vocab_size (the GGUF vocabulary is padded with
  unused tokens), so logits have the same size as transformers'. llama.cpp's converter does the
  same: it pads its token list to the (transformers-completed) vocab_size and cuts token_embd to
  that list, so Gemma 3 4B+ get 262208 rows, 1B / 270M 262144. Cutting to the tokenizer's 262144
  pieces instead would make `eval --ref` refuse llama.cpp-converted references as another vocabulary.
  The family's <image_soft_token> (id 262144) has no row in the 1B / 270M: it is left out with a warning.
- `Gemma3ForConditionalGeneration`: only the text model is converted (vision tower and projector
  are dropped, with a warning); images need llama.cpp's separate mmproj file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from gguf.constants import MODEL_ARCH, GGUFValueType, Keys
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.hparams import (
    DECODER_HPARAMS,
    F32,
    ROPE_SCALING_HPARAMS,
    HParam,
    ModelConfig,
    sliding_window_hparam,
)
from convert.gguf.registry import IGNORED_TENSORS, Architecture, register
from convert.gguf.tensors import Transform, add_offset, rename
from edge_ai.errors import EdgeAIError

NORMS = (T.ATTN_NORM, T.ATTN_POST_NORM, T.FFN_PRE_NORM, T.FFN_POST_NORM, T.OUTPUT_NORM)
GEMMA_BLOCK = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.ATTN_POST_NORM,
               T.FFN_PRE_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN, T.FFN_POST_NORM)
NORM_SHAPES = {kind: (lambda c: (c.n_embd,)) for kind in (T.ATTN_POST_NORM, T.FFN_PRE_NORM, T.FFN_POST_NORM)}

# llama.cpp's 27B sizes (recognised by layer count) scale queries by 1/sqrt(n_embd / n_head).
GEMMA2_27B_LAYERS = 46
GEMMA3_27B_LAYERS = 62
GEMMA3_SWA_ROPE_BASE = 10000.0  # transformers' and llama.cpp's default for Gemma 3's sliding layers


# ---------------------------------------------------------------- config

def layer_types(config: ModelConfig, period: int) -> list[str]:
    """Per-layer "sliding_attention" / "full_attention", as transformers derives them."""
    types = config.get("layer_types")
    if isinstance(types, list) and len(types) == config.n_layer:
        return [str(t) for t in types]
    if types is not None:
        raise EdgeAIError(f"config.json layer_types must list {config.n_layer} entries; fix config.json")
    period = config.get("sliding_window_pattern", default=period)
    if isinstance(period, bool) or not isinstance(period, int) or period <= 0:
        raise EdgeAIError(f"config.json sliding_window_pattern is {period!r}, expected a positive integer")
    return ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(config.n_layer)]


def sliding_window_pattern(period: int) -> HParam:
    """`attention.sliding_window_pattern`: one bool per layer, true for sliding-window layers."""
    def get(config: ModelConfig) -> list[bool] | None:
        if config.get("sliding_window") is None:
            return None
        return [t == "sliding_attention" for t in layer_types(config, period)]
    return HParam(Keys.Attention.SLIDING_WINDOW_PATTERN, get, GGUFValueType.ARRAY)


def _swa_rope(config: ModelConfig) -> dict[str, Any]:
    params = config.get("rope_parameters", default={})
    local = params.get("sliding_attention") if isinstance(params, dict) else None
    return local if isinstance(local, dict) else {}


def swa_rope_base(config: ModelConfig) -> float:
    return float(_swa_rope(config).get("rope_theta", config.get("rope_local_base_freq",
                                                               default=GEMMA3_SWA_ROPE_BASE)))


def query_scale(big_layers: int) -> Callable[[ModelConfig], float]:
    """The factor that turns llama.cpp's query scale into Hugging Face's query_pre_attn_scalar**-0.5."""
    def factor(config: ModelConfig) -> float:
        scalar = config.defaulted("query_pre_attn_scalar")
        if scalar is None:
            return 1.0
        if isinstance(scalar, bool) or not isinstance(scalar, (int, float)) or not scalar > 0:
            raise EdgeAIError(f"config.json query_pre_attn_scalar is {scalar!r}, expected a positive number")
        llama_cpp = config.n_embd / config.n_head if config.n_layer == big_layers else config.head_dim
        return math.sqrt(llama_cpp / scalar)
    return factor


def scaled(factor: Callable[[ModelConfig], float], offset: float = 0.0) -> Transform:
    """(w + offset) * factor(config): folds a query scale into Q (Gemma 2) or the q norm (Gemma 3)."""
    def transform(w: np.ndarray, config: ModelConfig) -> np.ndarray:
        if offset:
            w += np.float32(offset)
        f = factor(config)
        if f != 1.0:
            w *= np.float32(f)
        return w
    return transform


# ---------------------------------------------------------------- checks

def _common_checks(config: ModelConfig, period: int, big_layers: int, name: str) -> list[str]:
    warnings = []
    query_scale(big_layers)(config)  # validated now, not when the tensor is written
    if config.get("attention_bias") is True:
        raise EdgeAIError(f"config.json attention_bias=true: llama.cpp's {name} has no attention biases")
    if config.get("use_bidirectional_attention") is True:
        raise EdgeAIError("config.json use_bidirectional_attention=true (an embedding model) is not a "
                          f"causal {name} model; llama.cpp runs it as gemma-embedding, which is not supported here")
    act = config.get("hidden_activation", "hidden_act", default="gelu_pytorch_tanh")
    if act not in ("gelu_pytorch_tanh", "gelu_tanh", "gelu_new"):
        warnings.append(f"config.json hidden_activation {act!r}: llama.cpp uses tanh-approximated GELU, "
                        "so outputs differ slightly")
    unknown = sorted(set(layer_types(config, period)) - {"sliding_attention", "full_attention"})
    if unknown:
        raise EdgeAIError(f"config.json layer_types has {unknown[0]!r}; llama.cpp's {name} only has sliding-window "
                          "and full attention layers")
    rope_type = config.rope["rope_type"]
    if rope_type not in ("default", "linear"):
        warnings.append(f"RoPE type {rope_type!r} is not supported by llama.cpp for {name}; "
                        "long-context outputs will differ")
    return warnings


def gemma2_checks(config: ModelConfig) -> list[str]:
    warnings = _common_checks(config, 2, GEMMA2_27B_LAYERS, "gemma2")
    for key, default in (("attn_logit_softcapping", 50.0), ("final_logit_softcapping", 30.0)):
        if config.defaulted(key) is None:
            warnings.append(f"config.json has no {key}: llama.cpp soft-caps at {default} anyway, "
                            "so outputs differ where values exceed it")
    if config.defaulted("sliding_window") is None:
        warnings.append("config.json has no sliding_window: llama.cpp uses 4096 on every other layer")
    return warnings


def gemma3_checks(config: ModelConfig) -> list[str]:
    warnings = _common_checks(config, 6, GEMMA3_27B_LAYERS, "gemma3")
    if config.get("attn_logit_softcapping") is not None:
        raise EdgeAIError("config.json sets attn_logit_softcapping, which llama.cpp's gemma3 does not apply")
    if config.defaulted("sliding_window") is None:
        raise EdgeAIError("config.json has no sliding_window, which llama.cpp's gemma3 requires")
    if _swa_rope(config).get("rope_type", "default") != "default":
        warnings.append("RoPE scaling on the sliding-window layers is ignored by llama.cpp")
    if isinstance(config.raw.get("vision_config"), dict):
        warnings.append("only the text model is converted: the vision tower and projector are left out "
                        "(llama.cpp needs a separate mmproj GGUF for images)")
    return warnings


def no_space_prefix(vocab: Any, config: ModelConfig) -> None:
    """Gemma's tokenizer never adds a dummy-prefix space (as llama.cpp's converter writes)."""
    if vocab.model == "llama":
        vocab.add_space_prefix = False


# ---------------------------------------------------------------- registrations

_SOFTCAP_FINAL = HParam(Keys.LLM.FINAL_LOGIT_SOFTCAPPING, ("final_logit_softcapping",), F32)

GEMMA2 = register(Architecture(
    gguf_arch=MODEL_ARCH.GEMMA2,
    hf_architectures=("Gemma2ForCausalLM",),
    model_types=("gemma2",),
    hparams=DECODER_HPARAMS + ROPE_SCALING_HPARAMS + (
        HParam(Keys.LLM.ATTN_LOGIT_SOFTCAPPING, ("attn_logit_softcapping",), F32),
        _SOFTCAP_FINAL,
        sliding_window_hparam(),
        sliding_window_pattern(2),
    ),
    block_tensors=GEMMA_BLOCK,
    shapes=NORM_SHAPES,
    transforms={**{kind: add_offset(1.0) for kind in NORMS},
                T.ATTN_Q: scaled(query_scale(GEMMA2_27B_LAYERS))},
    checks=(gemma2_checks,),
    vocab_hook=no_space_prefix,
))

GEMMA3 = register(Architecture(
    gguf_arch=MODEL_ARCH.GEMMA3,
    hf_architectures=("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
    model_types=("gemma3", "gemma3_text"),
    hparams=DECODER_HPARAMS + ROPE_SCALING_HPARAMS + (
        _SOFTCAP_FINAL,
        sliding_window_hparam(),
        sliding_window_pattern(6),
        HParam(Keys.Rope.FREQ_BASE_SWA, swa_rope_base, F32),
    ),
    block_tensors=GEMMA_BLOCK + (T.ATTN_Q_NORM, T.ATTN_K_NORM),
    shapes=NORM_SHAPES,
    transforms={**{kind: add_offset(1.0) for kind in NORMS + (T.ATTN_K_NORM,)},
                T.ATTN_Q_NORM: scaled(query_scale(GEMMA3_27B_LAYERS), offset=1.0)},
    # Gemma3ForConditionalGeneration: keep the language model (transformers 4: language_model.model.*,
    # transformers 5: model.language_model.*), drop the vision tower and projector.
    ignore=IGNORED_TENSORS + (r"^(model\.)?(vision_tower|multi_modal_projector)\.",),
    regroup=(rename(r"^(language_model\.model|model\.language_model)\.", "model."),
             rename(r"^language_model\.lm_head\.", "lm_head.")),
    checks=(gemma3_checks,),
    vocab_hook=no_space_prefix,
))

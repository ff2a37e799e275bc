"""config.json -> GGUF hyperparameters, as data.

`ModelConfig` wraps config.json (with a multimodal `text_config` merged in, like llama.cpp) and
derives the sizes every decoder needs (`n_embd`, `n_head`, `head_dim`, ...). Each GGUF key an
architecture writes is one `HParam` row: the key, where its value comes from (config keys tried
in order, or a small function of the config) and its GGUF type. Architecture modules reuse the
shared tables below and append their own rows.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from gguf.constants import GGUFValueType, Keys

from edge_ai.errors import EdgeAIError

U32 = GGUFValueType.UINT32
F32 = GGUFValueType.FLOAT32
STR = GGUFValueType.STRING
BOOL = GGUFValueType.BOOL


_COMPLETE_CONFIG = """
import json, sys
from transformers import CONFIG_MAPPING
from transformers.utils import logging
logging.set_verbosity_error()
raw = json.load(sys.stdin)
json.dump(CONFIG_MAPPING[raw["model_type"]].from_dict(raw).to_dict(), sys.stdout, default=str)
"""


def with_transformers_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """config.json completed with the defaults of its transformers config class.

    Official configs leave out every field whose value is the class default (Gemma 3's multimodal
    configs omit head counts, rms_norm_eps, rope_theta... from `text_config`); reading the file
    alone would refuse them or, worse, guess a different rope_theta. Keys in the file always win.
    A model_type transformers does not know (or a config it rejects) is returned unchanged, and
    the checks on the file's own values report what is wrong. Runs in a short-lived child:
    importing transformers' config classes pulls in torch (~200 MB) that the streaming converter
    otherwise never needs, and the memory bound is the converter's promise.
    """
    if not isinstance(raw.get("model_type"), str):
        return raw
    full = _transformers_config(json.dumps(raw, sort_keys=True))
    return _fill_missing(raw, json.loads(full)) if full else raw


@functools.lru_cache(maxsize=32)
def _transformers_config(raw_json: str) -> str | None:
    """The child's answer for one config.json text (cached: converting again costs no ~3 s start)."""
    try:
        child = subprocess.run([sys.executable, "-c", _COMPLETE_CONFIG], input=raw_json,
                               capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return child.stdout if child.returncode == 0 else None


def _fill_missing(raw: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    merged = dict(raw)
    for key, value in full.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _fill_missing(merged[key], value)
    return merged


class ModelConfig:
    """config.json plus derived sizes; missing required values raise a one-line EdgeAIError."""

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw
        text = raw.get("text_config")
        self.values: dict[str, Any] = {**raw, **text} if isinstance(text, dict) else dict(raw)

    def get(self, *keys: str, default: Any = None) -> Any:
        """The value of the first key present (and not null), else `default`."""
        for key in keys:
            value = self.values.get(key)
            if value is not None:
                return value
        return default

    def require(self, *keys: str) -> Any:
        value = self.get(*keys)
        if value is None:
            raise EdgeAIError(f"config.json has no {' / '.join(keys)}; re-download the model's config.json")
        return value

    def positive_int(self, *keys: str) -> int:
        value = self.require(*keys)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise EdgeAIError(f"config.json {keys[0]} is {value!r}, expected a positive integer; fix config.json")
        return value

    # -- sizes every decoder has
    @cached_property
    def n_layer(self) -> int:
        return self.positive_int("num_hidden_layers", "n_layer", "num_layers")

    @cached_property
    def n_embd(self) -> int:
        return self.positive_int("hidden_size", "n_embd", "d_model")

    @cached_property
    def n_head(self) -> int:
        return self.positive_int("num_attention_heads", "n_head")

    @cached_property
    def n_head_kv(self) -> int:
        if self.get("num_key_value_heads", "n_head_kv") is None:
            return self.n_head
        return self.positive_int("num_key_value_heads", "n_head_kv")

    @cached_property
    def head_dim(self) -> int:
        if self.get("head_dim") is not None:
            return self.positive_int("head_dim")
        if self.n_embd % self.n_head:
            raise EdgeAIError(f"config.json hidden_size {self.n_embd} is not a multiple of num_attention_heads "
                              f"{self.n_head} and there is no head_dim; fix config.json")
        return self.n_embd // self.n_head

    @cached_property
    def n_ff(self) -> int:
        return self.positive_int("intermediate_size", "n_inner", "ffn_dim")

    @cached_property
    def n_vocab(self) -> int:
        return self.positive_int("vocab_size")

    @cached_property
    def n_expert(self) -> int:
        return self.positive_int("num_local_experts", "num_experts", "n_routed_experts")

    @cached_property
    def n_ff_exp(self) -> int:
        return self.positive_int("moe_intermediate_size", "intermediate_size")

    @property
    def tie_word_embeddings(self) -> bool | None:
        value = self.raw.get("tie_word_embeddings", self.values.get("tie_word_embeddings"))
        return value if isinstance(value, bool) else None

    # -- RoPE
    @cached_property
    def rope(self) -> dict[str, Any]:
        """The (full-attention) RoPE parameters, from transformers 5 `rope_parameters` or the older
        `rope_scaling` + `rope_theta`, with `rope_type` and `rope_theta` always filled in."""
        params = self.get("rope_parameters", "rope_scaling", default={})
        if not isinstance(params, dict):
            raise EdgeAIError(f"config.json rope_parameters is {params!r}, expected an object; fix config.json")
        if isinstance(params.get("full_attention"), dict):  # per-layer-type parameters (gemma3)
            params = params["full_attention"]
        params = dict(params)
        params.setdefault("rope_theta", self.get("rope_theta", default=10000.0))
        rope_type = params.get("rope_type", params.get("type")) or "default"
        params["rope_type"] = str(rope_type).lower()
        return params

    @property
    def rope_theta(self) -> float:
        return float(self.rope["rope_theta"])

    @property
    def partial_rotary_factor(self) -> float:
        return float(self.rope.get("partial_rotary_factor", self.get("partial_rotary_factor", default=1.0)))

    @property
    def rope_dims(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    def dim(self, name: str) -> int:
        """A size by name ("n_embd", "n_head", ...), for shape tables."""
        return int(getattr(self, name))


Source = tuple[str, ...] | Callable[[ModelConfig], Any]


@dataclass(frozen=True)
class HParam:
    """One GGUF metadata key: `key` ("{arch}" is the architecture name), where its value comes from
    (config.json keys tried in order, or a function of the config returning None to skip) and its type."""

    key: str
    source: Source
    type: GGUFValueType
    required: bool = False

    def value(self, config: ModelConfig) -> Any:
        if callable(self.source):
            value = self.source(config)
        else:
            value = config.require(*self.source) if self.required else config.get(*self.source)
        if value is None:
            return None
        if self.type == U32:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EdgeAIError(f"config.json gives {value!r} for {self.key.format(arch='<arch>')}, "
                                  "expected a non-negative integer; fix config.json")
        elif self.type == F32:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise EdgeAIError(f"config.json gives {value!r} for {self.key.format(arch='<arch>')}, "
                                  "expected a finite number; fix config.json")
            value = float(value)
        return value


def _rope_scaling_type(c: ModelConfig) -> str | None:
    return {"linear": "linear", "yarn": "yarn"}.get(c.rope["rope_type"])


def _rope_scaling_factor(c: ModelConfig) -> float | None:
    return c.rope.get("factor") if _rope_scaling_type(c) else None


def _rope_orig_ctx(c: ModelConfig) -> int | None:
    if c.rope["rope_type"] != "yarn":
        return None
    return c.rope.get("original_max_position_embeddings", c.get("original_max_position_embeddings"))


def _yarn(name: str, *aliases: str) -> Callable[[ModelConfig], Any]:
    def get(c: ModelConfig) -> Any:
        if c.rope["rope_type"] != "yarn":
            return None
        return next((c.rope[k] for k in (name, *aliases) if c.rope.get(k) is not None), None)
    return get


# What every decoder-only transformer writes.
DECODER_HPARAMS: tuple[HParam, ...] = (
    HParam(Keys.LLM.CONTEXT_LENGTH, ("max_position_embeddings", "n_positions", "max_sequence_length"), U32,
           required=True),
    HParam(Keys.LLM.EMBEDDING_LENGTH, lambda c: c.n_embd, U32),
    HParam(Keys.LLM.BLOCK_COUNT, lambda c: c.n_layer, U32),
    HParam(Keys.LLM.FEED_FORWARD_LENGTH, lambda c: c.n_ff, U32),
    HParam(Keys.LLM.VOCAB_SIZE, lambda c: c.n_vocab, U32),
    HParam(Keys.Attention.HEAD_COUNT, lambda c: c.n_head, U32),
    HParam(Keys.Attention.HEAD_COUNT_KV, lambda c: c.n_head_kv, U32),
    HParam(Keys.Attention.KEY_LENGTH, lambda c: c.head_dim, U32),
    HParam(Keys.Attention.VALUE_LENGTH, lambda c: c.head_dim, U32),
    HParam(Keys.Attention.LAYERNORM_RMS_EPS, ("rms_norm_eps", "layer_norm_epsilon"), F32, required=True),
    HParam(Keys.Rope.DIMENSION_COUNT, lambda c: c.rope_dims, U32),
    HParam(Keys.Rope.FREQ_BASE, lambda c: c.rope_theta, F32),
)

# Linear and YaRN RoPE scaling are metadata; Llama-3 scaling is a tensor (see archs/llama.py),
# LongRoPE is tensors + an attention factor (archs/phi3.py).
ROPE_SCALING_HPARAMS: tuple[HParam, ...] = (
    HParam(Keys.Rope.SCALING_TYPE, _rope_scaling_type, STR),
    HParam(Keys.Rope.SCALING_FACTOR, _rope_scaling_factor, F32),
    HParam(Keys.Rope.SCALING_ORIG_CTX_LEN, _rope_orig_ctx, U32),
    HParam(Keys.Rope.SCALING_YARN_EXT_FACTOR, _yarn("extrapolation_factor"), F32),
    HParam(Keys.Rope.SCALING_YARN_ATTN_FACTOR, _yarn("attention_factor", "attn_factor"), F32),
    HParam(Keys.Rope.SCALING_YARN_BETA_FAST, _yarn("beta_fast"), F32),
    HParam(Keys.Rope.SCALING_YARN_BETA_SLOW, _yarn("beta_slow"), F32),
)

# For the mixture-of-experts families (written only when config.json has them).
MOE_HPARAMS: tuple[HParam, ...] = (
    HParam(Keys.LLM.EXPERT_COUNT, ("num_local_experts", "num_experts"), U32),
    HParam(Keys.LLM.EXPERT_USED_COUNT, ("num_experts_per_tok",), U32),
    HParam(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, ("moe_intermediate_size",), U32),
    HParam(Keys.LLM.EXPERT_SHARED_FEED_FORWARD_LENGTH, ("shared_expert_intermediate_size",), U32),
)


def sliding_window_hparam(*, zero_when_absent: bool = False) -> HParam:
    """`attention.sliding_window` from config.json `sliding_window` (0 when absent if asked)."""
    def get(c: ModelConfig) -> int | None:
        value = c.get("sliding_window")
        return 0 if value is None and zero_when_absent else value
    return HParam(Keys.Attention.SLIDING_WINDOW, get, U32)

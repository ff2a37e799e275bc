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
import os
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


# Exit codes of the child below, so the parent can say what is wrong and how to fix it.
_NO_TRANSFORMERS, _UNKNOWN_MODEL_TYPE = 3, 4

_COMPLETE_CONFIG = f"""
import json, sys
try:
    import transformers
    from transformers import CONFIG_MAPPING
    from transformers.utils import logging
except ImportError:
    sys.exit({_NO_TRANSFORMERS})
logging.set_verbosity_error()
raw = json.load(sys.stdin)
if raw["model_type"] not in CONFIG_MAPPING:
    print(transformers.__version__)
    sys.exit({_UNKNOWN_MODEL_TYPE})
json.dump(CONFIG_MAPPING[raw["model_type"]].from_dict(raw).to_dict(), sys.stdout, default=str)
"""
_COMPLETION_TIMEOUT = 300  # seconds; importing transformers' config classes takes ~1.5 s
# transformers without torch (and TF/Flax): configuration classes only, no model code.
_NO_TORCH = {"USE_TORCH": "0", "USE_TF": "0", "USE_FLAX": "0"}


@dataclass(frozen=True)
class DefaultsUnknown:
    """Why transformers' class defaults for config.json could not be read, and how to get them."""

    reason: str  # e.g. "transformers is not installed"
    fix: str  # e.g. "install the convert extra (pip install 'edge-ai[convert]')"


def complete_config(raw: dict[str, Any]) -> ModelConfig:
    """config.json completed with the defaults of its transformers config class.

    Official configs leave out every field whose value is the class default (Gemma 3's multimodal
    configs omit head counts, rms_norm_eps, rope_theta... from `text_config`); reading the file
    alone would refuse them or, worse, guess a different rope_theta. Keys in the file always win.
    When the defaults cannot be read (no transformers, a model_type it does not know, a config it
    rejects), the file is used as is and the ModelConfig remembers why: a value the conversion
    then needs but the file omits is refused rather than guessed (see ModelConfig.defaulted).
    Runs in a short-lived child: transformers' config classes live in a package that the streaming
    converter otherwise never needs (and whose memory would stay), and the memory bound is the
    converter's promise. The child hides torch from transformers (USE_TORCH=0): config classes do
    not need it, and importing it cost ~2 s of CPU and ~230 MB (the same defaults come out; torch
    was most of the time the converter spent in config completion).
    """
    model_type = raw.get("model_type")
    if not isinstance(model_type, str):
        return ModelConfig(raw, DefaultsUnknown("config.json names no model_type", "add model_type to config.json"))
    full, unknown = _transformers_config(json.dumps(raw, sort_keys=True))
    if full is None:
        return ModelConfig(raw, unknown)
    return ModelConfig(_fill_missing(raw, json.loads(full)))


@functools.lru_cache(maxsize=32)
def _transformers_config(raw_json: str) -> tuple[str | None, DefaultsUnknown | None]:
    """The child's answer for one config.json text (cached: converting again costs no ~3 s start):
    the completed config as JSON, or why there is none."""
    try:
        child = subprocess.run([sys.executable, "-c", _COMPLETE_CONFIG], input=raw_json, env={**os.environ, **_NO_TORCH},
                               capture_output=True, text=True, timeout=_COMPLETION_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, DefaultsUnknown(f"reading transformers' defaults took over {_COMPLETION_TIMEOUT} s",
                                     "retry when the machine is less busy")
    except OSError as exc:
        return None, DefaultsUnknown(f"transformers could not be started ({exc.strerror or exc})",
                                     "check the Python installation")
    if child.returncode == 0:
        return child.stdout, None
    return None, _child_failure(child, json.loads(raw_json)["model_type"])


def _child_failure(child: subprocess.CompletedProcess[str], model_type: str) -> DefaultsUnknown:
    if child.returncode == _NO_TRANSFORMERS:
        return DefaultsUnknown("transformers is not installed",
                               "install the convert extra (pip install 'edge-ai[convert]')")
    if child.returncode == _UNKNOWN_MODEL_TYPE:
        return DefaultsUnknown(f"transformers {child.stdout.strip()} does not know model_type {model_type!r}",
                               f"install a transformers version that knows {model_type!r}")
    lines = child.stderr.strip().splitlines()
    return DefaultsUnknown(f"transformers rejected config.json ({lines[-1] if lines else 'no message'})",
                           "fix config.json")


def _fill_missing(raw: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    merged = dict(raw)
    for key, value in full.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _fill_missing(merged[key], value)
    return merged


class ModelConfig:
    """config.json plus derived sizes; missing required values raise a one-line EdgeAIError.

    `defaults_unknown` is set when transformers' class defaults could not be filled in: then
    every value the file omits but the conversion needs is recorded (`defaulted`, `require`),
    and `check_defaults_known` refuses the conversion naming them all."""

    def __init__(self, raw: dict[str, Any], defaults_unknown: DefaultsUnknown | None = None):
        self.raw = raw
        text = raw.get("text_config")
        self.values: dict[str, Any] = {**raw, **text} if isinstance(text, dict) else dict(raw)
        self.defaults_unknown = defaults_unknown
        self.omitted: list[str] = []  # needed keys the file lacks, while defaults_unknown

    def get(self, *keys: str, default: Any = None) -> Any:
        """The value of the first key present (and not null), else `default`."""
        for key in keys:
            value = self.values.get(key)
            if value is not None:
                return value
        return default

    def defaulted(self, *keys: str, default: Any = None) -> Any:
        """Like `get`, for a value whose absence means "the model class's default", which differs
        between families (rope_theta: 10000 for Llama, 1e6 for Gemma 3) and which `default` can only
        guess. If the file omits every key while transformers' defaults are unknown, the keys are
        recorded so the conversion is refused instead of written with a guess."""
        if self.defaults_unknown is not None and not any(key in self.values for key in keys):
            self._omit(" / ".join(keys))
        return self.get(*keys, default=default)

    def require(self, *keys: str) -> Any:
        value = self.get(*keys)
        if value is None:
            if self.defaults_unknown is not None and not any(key in self.values for key in keys):
                self._omit(" / ".join(keys))
                self.check_defaults_known()
            raise EdgeAIError(f"config.json has no {' / '.join(keys)}; re-download the model's config.json")
        return value

    def _omit(self, name: str) -> None:
        if name not in self.omitted:
            self.omitted.append(name)

    def check_defaults_known(self) -> None:
        """Refuse (one line: the keys, why their defaults are unknown, the fix) if the conversion
        needed values that config.json omits and transformers could not supply."""
        if not self.omitted or self.defaults_unknown is None:
            return
        keys = ", ".join(self.omitted)
        them = "it" if len(self.omitted) == 1 else "them"
        raise EdgeAIError(f"config.json omits {keys}, and the model's defaults cannot be read "
                          f"({self.defaults_unknown.reason}); {self.defaults_unknown.fix}, or add {them} to config.json")

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
        if params.get("rope_theta") is None:
            params["rope_theta"] = self.defaulted("rope_theta", default=10000.0)
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


def replace_rows(rows: tuple[HParam, ...], *replacements: HParam) -> tuple[HParam, ...]:
    """`rows` with each row whose key a replacement has swapped for it (in place), the other
    replacements appended: a family whose attention is not n_head x head_dim (DeepSeek's MLA)
    reuses the shared tables without writing a key twice."""
    new = {r.key: r for r in replacements}
    kept = tuple(new.pop(r.key, r) for r in rows)
    return kept + tuple(new.values())


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


# Routed experts, for the families whose expert width is `moe_intermediate_size` (DeepSeek, GLM-4.5)
# or that have no other MLP (gpt-oss: intermediate_size); n_expert reads every family's key.
def routed_expert_hparams(expert_ff: Source = ("moe_intermediate_size",)) -> tuple[HParam, ...]:
    return (
        HParam(Keys.LLM.EXPERT_COUNT, lambda c: c.n_expert, U32),
        HParam(Keys.LLM.EXPERT_USED_COUNT, ("num_experts_per_tok",), U32, required=True),
        HParam(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, expert_ff, U32, required=True),
    )


def sliding_window_hparam(*, zero_when_absent: bool = False) -> HParam:
    """`attention.sliding_window` from config.json `sliding_window` (0 when absent if asked)."""
    def get(c: ModelConfig) -> int | None:
        value = c.get("sliding_window")
        return 0 if value is None and zero_when_absent else value
    return HParam(Keys.Attention.SLIDING_WINDOW, get, U32)

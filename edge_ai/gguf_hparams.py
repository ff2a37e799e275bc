"""Check a GGUF's hyperparameters against what llama.cpp asserts while loading them.

llama.cpp reads the hyperparameters in `llama_model_base::load_hparams` (llama-model.cpp) and the
per-architecture `load_arch_hparams`; a bad value there is not an error but a `GGML_ASSERT`, which
aborts the whole process (the TUI or the server with it). So every such assertion is restated here
as a row of `RULES`, read through gguf's `Keys` templates, and checked before llama.cpp sees the
file. Values at the edges of their types are refused too: llama.h hands many of these uint32 values
to Python as int32, where 2**32-1 becomes -1 (a "negative size"), and a NaN float poisons every
computation. Rules were taken from llama-cpp-python 0.3.36's vendored llama.cpp; what no rule
catches is caught by loading a new file in a child process first (runtime/llamacpp/load.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gguf.constants import Keys

if TYPE_CHECKING:
    from edge_ai.gguf_file import GGUFInfo

RECONVERT = "re-convert the model with a current llama.cpp"
INT32_MAX = 2**31 - 1  # llama.h returns n_ctx_train, n_embd, n_layer, n_head... as int32_t
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
MAX_WIDTH = 1_000_000  # sanity bound for widths and head counts
UINT32 = "UINT32"
_PER_LAYER_TYPES = (UINT32, "ARRAY[UINT32]", "ARRAY[INT32]")
_UNSIGNED_TYPES = ("UINT8", "UINT16", "UINT32", "UINT64")
_FLOAT_TYPES = ("FLOAT32", "FLOAT64")
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # LLAMA_ROPE_SCALING_TYPES


class _View:
    """One architecture's hyperparameters as llama.cpp reads them: `{arch}` filled in, absent
    optional integers as 0, and a per-layer array (get_key_or_arr) as its largest value."""

    def __init__(self, info: GGUFInfo, arch: str) -> None:
        self.info = info
        self.arch = arch

    def key(self, template: str) -> str:
        return template.format(arch=self.arch)

    def has(self, template: str) -> bool:
        return self.key(template) in self.info.metadata

    def type_of(self, template: str) -> str:
        return self.info.metadata_types[self.key(template)]

    def raw(self, template: str) -> Any:
        return self.info.metadata[self.key(template)]

    def int(self, template: str) -> int:
        """The value llama.cpp would use (0 when absent, the largest entry of a per-layer array)."""
        if not self.has(template) or self.type_of(template) not in _PER_LAYER_TYPES:
            return 0
        value = self.raw(template)
        if isinstance(value, list):
            return max(value, default=0)
        return value if isinstance(value, int) else 0


@dataclass(frozen=True)
class Ref:
    """A bound that is another hyperparameter's value (plus `offset`), e.g. block_count."""

    key: str
    offset: int = 0

    def value(self, view: _View) -> int:
        return view.int(self.key) + self.offset

    def text(self, view: _View) -> str:
        shift = f" {'+' if self.offset > 0 else '-'} {abs(self.offset)}" if self.offset else ""
        return f"{view.key(self.key)}{shift} = {self.value(view)}"


Bound = int | Ref


def _bound(bound: Bound, view: _View) -> int:
    return bound.value(view) if isinstance(bound, Ref) else bound


@dataclass(frozen=True)
class If:
    """The condition under which a rule applies, stated on another hyperparameter."""

    key: str
    test: Callable[[int], bool]
    text: str  # what the condition means, e.g. "is 0 (a dense model)"

    def holds(self, view: _View) -> bool:
        return self.test(view.int(self.key))


@dataclass(frozen=True)
class Range:
    """An integer hyperparameter must lie in low..high (a per-layer array: every entry)."""

    key: str
    low: Bound = 0
    high: Bound = INT32_MAX
    required: bool = False  # llama.cpp's get_key(..., required=true) fails without it
    per_layer: bool = False  # stored as one uint32 or one per layer (get_key_or_arr)
    when: If | None = None
    archs: frozenset[str] = frozenset()  # empty: every architecture

    def problem(self, view: _View) -> str | None:
        name = view.info.path.name
        if not view.has(self.key):
            return f"{name} is missing {view.key(self.key)}; {RECONVERT}" if self.required else None
        wanted = _PER_LAYER_TYPES if self.per_layer else (UINT32,)
        if view.type_of(self.key) not in wanted:
            return type_problem(view.info, view.key(self.key), " or ".join(wanted))
        low, high = _bound(self.low, view), _bound(self.high, view)
        value = view.raw(self.key)
        values = value if isinstance(value, list) else [value] if isinstance(value, int) else []
        bad = next((v for v in values if not low <= v <= high), None)
        if bad is None:
            return None
        limits = [b.text(view) for b in (self.low, self.high) if isinstance(b, Ref)]
        because = f" because {view.key(self.when.key)} {self.when.text}" if self.when else ""
        given = f" ({'; '.join(limits)})" if limits else ""
        return (f"{name}: {view.key(self.key)} is {bad}, outside the valid range {low}..{high}{given}{because}; "
                f"{RECONVERT}")


@dataclass(frozen=True)
class OneOf:
    """A hyperparameter must be one of a few values (strings, numbers or other hyperparameters)."""

    key: str
    choices: tuple[str | int | Ref, ...]
    archs: frozenset[str] = frozenset()
    when: If | None = None

    def problem(self, view: _View) -> str | None:
        if not view.has(self.key):
            return None
        allowed = [c.value(view) if isinstance(c, Ref) else c for c in self.choices]
        value = view.raw(self.key)
        if value in allowed and type(value) is type(allowed[0]):
            return None
        shown = ", ".join(c.text(view) if isinstance(c, Ref) else repr(c) for c in self.choices)
        return f"{view.info.path.name}: {view.key(self.key)} is {value!r} but must be one of: {shown}; {RECONVERT}"


@dataclass(frozen=True)
class Divides:
    """A hyperparameter must divide another one (e.g. expert groups split the experts evenly)."""

    key: str
    into: str
    when: If | None = None
    archs: frozenset[str] = frozenset()

    def problem(self, view: _View) -> str | None:
        divisor, total = view.int(self.key), view.int(self.into)
        if not view.has(self.key) or (divisor and total % divisor == 0):
            return None
        return (f"{view.info.path.name}: {view.key(self.key)} is {divisor} but must divide "
                f"{view.key(self.into)} = {total}; {RECONVERT}")


Rule = Range | OneOf | Divides

_EXPERTS = Keys.LLM.EXPERT_COUNT
_GROUPS = Keys.LLM.EXPERT_GROUP_COUNT
_DENSE = If(_EXPERTS, lambda n: n == 0, "is 0 (a dense model)")
_MOE = If(_EXPERTS, lambda n: n > 0, "is above 0 (a mixture of experts)")
_GROUPED = If(_GROUPS, lambda n: n > 1, "is above 1")
_WAVTOKENIZER = frozenset({"wavtokenizer-dec"})
_GEMMA_EMBEDDING = frozenset({"gemma-embedding"})
_BLOCK_COUNT = Range(Keys.LLM.BLOCK_COUNT, 1, MAX_LAYERS, required=True)

RULES: tuple[Rule, ...] = (
    # llama_model_base::load_hparams, in its order
    Range(Keys.LLM.CONTEXT_LENGTH, 1, required=True),
    Range(Keys.LLM.EMBEDDING_LENGTH, 1, MAX_WIDTH, required=True),
    _BLOCK_COUNT,
    Range(Keys.LLM.NEXTN_PREDICT_LAYERS, 0, Ref(Keys.LLM.BLOCK_COUNT)),
    Range(Keys.PosNet.BLOCK_COUNT, 0, Ref(Keys.LLM.BLOCK_COUNT), archs=_WAVTOKENIZER),
    Range(Keys.ConvNext.BLOCK_COUNT, 0, Ref(Keys.LLM.BLOCK_COUNT), archs=_WAVTOKENIZER),
    Range(_EXPERTS, 0, MAX_EXPERTS),
    Range(Keys.LLM.EXPERT_USED_COUNT, 0, 0, per_layer=True, when=_DENSE),
    Range(Keys.LLM.EXPERT_USED_COUNT, 1, Ref(_EXPERTS), required=True, per_layer=True, when=_MOE),
    Range(_GROUPS, 0, 0, when=_DENSE),
    Range(_GROUPS, 0, Ref(_EXPERTS, -1), when=_MOE),
    Divides(_GROUPS, _EXPERTS, when=_GROUPED),
    Range(Keys.LLM.EXPERT_GROUP_USED_COUNT, 1, Ref(_GROUPS, -1), required=True, when=_GROUPED),
    OneOf(Keys.Rope.SCALING_TYPE, ROPE_SCALING_TYPES),
    # load_arch_hparams of the architectures gguf-py knows
    OneOf(Keys.LLM.DENSE_FEAT_IN_SIZE.format(arch="{arch}", dense="dense_2"),
          (0, Ref(Keys.LLM.EMBEDDING_LENGTH)), archs=_GEMMA_EMBEDDING),
    OneOf(Keys.LLM.DENSE_FEAT_OUT_SIZE.format(arch="{arch}", dense="dense_3"),
          (0, Ref(Keys.LLM.EMBEDDING_LENGTH)), archs=_GEMMA_EMBEDDING),
)
"""Every GGML_ASSERT on a hyperparameter in llama.cpp's load_hparams, as data."""

_FLOAT_RULES: tuple[tuple[str, str, Callable[[float], bool]], ...] = (
    (Keys.Attention.LAYERNORM_RMS_EPS, "between 0 and 1", lambda v: 0 < v < 1),
    (Keys.Attention.LAYERNORM_EPS, "between 0 and 1", lambda v: 0 < v < 1),
    (Keys.Rope.FREQ_BASE, "positive", lambda v: v > 0),
    (Keys.Rope.FREQ_BASE_SWA, "positive", lambda v: v > 0),
)
"""Floats that do not abort at load but make the first decode abort or emit garbage."""


def hyperparameter_problems(info: GGUFInfo, arch: str) -> list[str]:
    """Every hyperparameter llama.cpp would abort on (or mis-load), one line each naming the key,
    its value and the valid range."""
    view = _View(info, arch)
    found = {view.key(rule.key): p for rule in RULES if (p := _apply(rule, view))}
    problems = [*found.values(), *_edge_problems(view, skip=found.keys())]
    for key, wanted, valid in _FLOAT_RULES:
        problems += _float_problems(info, view.key(key), wanted, valid)
    if view.key(_BLOCK_COUNT.key) in found:  # per-layer values cannot be checked without a valid layer count
        return problems
    return problems + _per_layer_problems(info, arch, view.int(Keys.LLM.BLOCK_COUNT))


def _apply(rule: Rule, view: _View) -> str | None:
    if rule.archs and view.arch not in rule.archs:
        return None
    if rule.when is not None and not rule.when.holds(view):
        return None
    return rule.problem(view)


def _edge_problems(view: _View, skip: Collection[str]) -> list[str]:
    """Any unsigned integer of the architecture above int32 (it reaches Python as a negative size)
    and any float that is NaN or infinite; keys in `skip` were already reported by a rule."""
    info, prefix = view.info, f"{view.arch}."
    problems = []
    for key, vtype in info.metadata_types.items():
        if not key.startswith(prefix) or key in skip:
            continue
        value = info.metadata[key]
        values = value if isinstance(value, list) else [value]
        element = vtype.removeprefix("ARRAY[").removesuffix("]")
        if element in _UNSIGNED_TYPES:
            bad = next((v for v in values if v > INT32_MAX), None)
            if bad is not None:
                problems.append(f"{info.path.name}: {key} is {bad}, outside the valid range 0..{INT32_MAX}; "
                                f"{RECONVERT}")
        elif element in _FLOAT_TYPES:
            bad = next((v for v in values if not math.isfinite(v)), None)
            if bad is not None:
                problems.append(f"{info.path.name}: {key} is {bad} but must be finite; {RECONVERT}")
    return problems


def _float_problems(info: GGUFInfo, key: str, wanted: str, valid: Callable[[float], bool]) -> list[str]:
    """Check an optional float32 hyperparameter: out-of-range values crash or derail decoding."""
    if key not in info.metadata:
        return []
    if info.metadata_types[key] != "FLOAT32":
        return [type_problem(info, key, "FLOAT32")]
    value = info.metadata[key]
    if not math.isfinite(value) or valid(value):
        return []  # non-finite values are reported by _edge_problems
    return [f"{info.path.name}: {key} is {value} but must be finite and {wanted}; {RECONVERT}"]


def _per_layer_problems(info: GGUFInfo, arch: str, n_layer: int) -> list[str]:
    """Head counts and FFN width: llama.cpp reads each as one uint32 for all layers or one per layer.

    They must be positive when the layers have such blocks; attention-free models (Mamba, RWKV)
    legitimately store 0.
    """
    head_key = Keys.Attention.HEAD_COUNT.format(arch=arch)
    kv_key = Keys.Attention.HEAD_COUNT_KV.format(arch=arch)
    ff_key = Keys.LLM.FEED_FORWARD_LENGTH.format(arch=arch)
    has_attention = _has_layer_tensor(info, "attn_q")  # attn_q, attn_qkv, attn_q_a...
    problems: list[str] = []
    if head_key not in info.metadata and has_attention:
        problems.append(f"{info.path.name} is missing {head_key}; {RECONVERT}")
    heads, head_problems = _layer_values(info, head_key, n_layer, int(has_attention))
    kv_heads, kv_problems = _layer_values(info, kv_key, n_layer, int(has_attention))
    _, ff_problems = _layer_values(info, ff_key, n_layer, int(_has_layer_tensor(info, "ffn_")))
    problems += head_problems + kv_problems + ff_problems
    if heads is not None and kv_heads is not None:
        problems += _gqa_problems(info, head_key, heads, kv_key, kv_heads)
        problems += _kv_shape_problems(info, arch, heads, kv_key, kv_heads)
    return problems


def _layer_values(info: GGUFInfo, key: str, n_layer: int, low: int) -> tuple[list[int] | None, list[str]]:
    """The per-layer values of `key` (None if absent, broken or too long to inspect) and its problems.

    A scalar must be at least `low`; a per-layer array may hold 0 for layers without that block
    (hybrid attention/SSM models do this).
    """
    if key not in info.metadata:
        return None, []
    value, vtype = info.metadata[key], info.metadata_types[key]
    if vtype not in _PER_LAYER_TYPES:
        return None, [type_problem(info, key, "UINT32 or one UINT32 per layer")]
    if vtype == UINT32:
        if not low <= value <= MAX_WIDTH:
            return None, [range_problem(info, key, value, low, MAX_WIDTH)]
        return [value] * n_layer, []
    length = array_length(value)
    if length != n_layer:
        return None, [f"{info.path.name}: {key} has {length} entries but there are {n_layer} layers; {RECONVERT}"]
    if not isinstance(value, list):  # an ArraySummary: too long to inspect
        return None, []
    bad = [v for v in value if not 0 <= v <= MAX_WIDTH]
    if bad:
        return None, [range_problem(info, key, bad[0], 0, MAX_WIDTH)]
    return value, []


def _gqa_problems(info: GGUFInfo, head_key: str, heads: list[int], kv_key: str, kv_heads: list[int]) -> list[str]:
    """Grouped-query attention needs head_count to be a multiple of head_count_kv in every attention layer."""
    for layer, (n_head, n_kv) in enumerate(zip(heads, kv_heads)):
        if n_kv and (n_head == 0 or n_head % n_kv):
            where = "" if info.metadata_types[kv_key] == UINT32 else f" (layer {layer})"
            return [f"{info.path.name}: {kv_key} is {n_kv}{where} but must divide {head_key} {n_head}; {RECONVERT}"]
    return []


def _kv_shape_problems(info: GGUFInfo, arch: str, heads: list[int], kv_key: str, kv_heads: list[int]) -> list[str]:
    """Each layer's attn_k.weight must be head_count_kv x key_length wide (llama.cpp creates it as
    {n_embd, n_embd_k_gqa(il)} and refuses the file otherwise). A per-layer head_count_kv array
    written by hand or by a broken converter can disagree with the tensors while every value stays
    in range; the KV cache would also be sized from it. Sliding-window layers may use key_length_swa."""
    n_embd = info.metadata.get(Keys.LLM.EMBEDDING_LENGTH.format(arch=arch))
    key_len = info.metadata.get(Keys.Attention.KEY_LENGTH.format(arch=arch))
    if not isinstance(key_len, int):
        if not isinstance(n_embd, int) or not heads or not heads[0]:
            return []
        key_len = n_embd // heads[0]
    key_len_swa = info.metadata.get(Keys.Attention.KEY_LENGTH_SWA.format(arch=arch), key_len)
    for tensor in info.tensors:
        parts = tensor.name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2:] != ["attn_k", "weight"] or len(tensor.shape) != 2:
            continue
        layer = int(parts[1])
        if layer >= len(kv_heads):
            continue  # a tensor beyond block_count is another check's problem
        width = tensor.shape[1]
        if width not in (kv_heads[layer] * key_len, kv_heads[layer] * key_len_swa):
            where = "" if info.metadata_types[kv_key] == UINT32 else f" for layer {layer}"
            return [f"{info.path.name}: {kv_key} is {kv_heads[layer]}{where} but {tensor.name} is {width} "
                    f"values wide, not {kv_heads[layer]} heads x {key_len}; {RECONVERT}"]
    return []


def _has_layer_tensor(info: GGUFInfo, prefix: str) -> bool:
    """Whether any layer has a tensor whose kind starts with `prefix` (blk.N.<prefix>...)."""
    return any(_layer_tensor_kind(t.name).startswith(prefix) for t in info.tensors)


def _layer_tensor_kind(tensor_name: str) -> str:
    """'attn_q' for 'blk.3.attn_q.weight'; '' for tensors outside the layers."""
    parts = tensor_name.split(".")
    return parts[2] if len(parts) > 2 and parts[0] == "blk" else ""


def type_problem(info: GGUFInfo, key: str, wanted: str) -> str:
    return f"{info.path.name}: {key} is stored as {info.metadata_types[key]} but llama.cpp needs {wanted}; {RECONVERT}"


def range_problem(info: GGUFInfo, key: str, value: int, low: int, high: int) -> str:
    return f"{info.path.name}: {key} is {value}, outside the valid range {low}..{high}; {RECONVERT}"


def array_length(value: Any) -> int:
    """Entries of a metadata array, whether read in full (a list) or summarised (an ArraySummary)."""
    return len(value) if isinstance(value, list) else getattr(value, "length", 0)

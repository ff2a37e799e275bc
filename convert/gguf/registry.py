"""Architecture families: what one `convert/gguf/archs/<family>.py` module declares.

An architecture is a frozen `Architecture` record, registered under the Hugging Face names that
config.json uses (`architectures[0]`, with `model_type` as the fallback). Everything the
converter does differently per family is a field of it, so adding a family is a short data module:

    from gguf.constants import MODEL_ARCH, MODEL_TENSOR as T
    from convert.gguf.registry import Architecture, register
    from convert.gguf.hparams import DECODER_HPARAMS

    QWEN2 = register(Architecture(
        gguf_arch=MODEL_ARCH.QWEN2,
        hf_architectures=("Qwen2ForCausalLM",),
        model_types=("qwen2",),
        hparams=DECODER_HPARAMS,
    ))

See the field docs for the hooks (transforms, regroup for MoE stacking, extra tensors, shape
overrides, warnings). Modules in `convert/gguf/archs/` are imported automatically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gguf.constants import MODEL_ARCH, MODEL_ARCH_NAMES
from gguf.constants import MODEL_TENSOR as T

from convert.gguf.hparams import (
    DECODER_HPARAMS,
    ROPE_SCALING_HPARAMS,
    HParam,
    ModelConfig,
)
from convert.gguf.tensors import (
    DENSE_BLOCK,
    KEEP_F32,
    ExtraTensors,
    Regroup,
    ShapeRule,
    Transform,
)
from edge_ai.errors import EdgeAIError

Check = Callable[[ModelConfig], Iterable[str]]
LayerTensors = Callable[[ModelConfig, int], tuple[T, ...]]
VocabHook = Callable[[Any, ModelConfig], None]

IGNORED_TENSORS: tuple[str, ...] = (r"(^|\.)rotary_emb\.inv_freq$",)


@dataclass(frozen=True)
class Architecture:
    """How one model family converts. Only `gguf_arch` and `hf_architectures` are mandatory."""

    gguf_arch: MODEL_ARCH
    """llama.cpp's architecture (also selects gguf-py's tensor name map)."""
    hf_architectures: tuple[str, ...]
    """config.json `architectures` entries handled by this family, e.g. "LlamaForCausalLM"."""
    model_types: tuple[str, ...] = ()
    """config.json `model_type` values, used when `architectures` names nothing registered."""
    hparams: tuple[HParam, ...] = DECODER_HPARAMS + ROPE_SCALING_HPARAMS
    """GGUF metadata rows (config key -> GGUF key); see hparams.py for the shared tables."""
    block_tensors: tuple[T, ...] = DENSE_BLOCK
    """Weights every block must have (`blk.N.<name>.weight`); a missing one is an error."""
    final_norm: T = T.OUTPUT_NORM
    """The kind of the norm before the output matrix (LFM2's is `token_embd_norm`); required."""
    layer_tensors: LayerTensors | None = None
    """Weights block N must have besides `block_tensors`, for families whose layers differ
    (DeepSeek's leading dense layers before the MoE ones, LFM2's convolution and attention layers)."""
    transforms: Mapping[T, Transform] = field(default_factory=dict)
    """Per-tensor-kind, shape-preserving transforms (Q/K permutation, norm offsets); applied to
    both `.weight` and `.bias` of that kind."""
    shapes: Mapping[T, ShapeRule] = field(default_factory=dict)
    """Expected (numpy-order) shapes by kind, overriding tensors.DEFAULT_SHAPES (e.g. fused gate_up)."""
    regroup: tuple[Regroup, ...] = ()
    """Rewrites of the checkpoint's tensor listing before name mapping, in order: stack MoE experts
    into 3-D tensors (tensors.stack_experts), split fused tensors (tensors.split_tensor), rename."""
    extra_tensors: tuple[ExtraTensors, ...] = ()
    """Tensors computed from config.json, e.g. Llama-3's rope_freqs; return (kind, float32 array)."""
    ignore: tuple[str, ...] = IGNORED_TENSORS
    """Regexes of checkpoint tensors to drop (buffers that llama.cpp recomputes)."""
    keep_f32: frozenset[T] = KEEP_F32
    """Kinds stored as F32 whatever the outtype (routers, RoPE factors)."""
    checks: tuple[Check, ...] = ()
    """Functions of the config that raise EdgeAIError for what llama.cpp cannot run, and return
    warnings (strings) for what it runs differently; warnings go into the report."""
    vocab_hook: VocabHook | None = None
    """Adjust the converted vocabulary (a vocab.Vocabulary) for family quirks."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", MappingProxyType(dict(self.transforms)))
        object.__setattr__(self, "shapes", MappingProxyType(dict(self.shapes)))

    @property
    def name(self) -> str:
        """The GGUF `general.architecture` value, e.g. "llama"."""
        return MODEL_ARCH_NAMES[self.gguf_arch]


_BY_HF_ARCH: dict[str, Architecture] = {}
_BY_MODEL_TYPE: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Make `arch` findable by its config.json names; returns it so modules can keep a handle."""
    for name in arch.hf_architectures:
        if name in _BY_HF_ARCH and _BY_HF_ARCH[name] is not arch:
            raise ValueError(f"architecture {name} is registered twice")
        _BY_HF_ARCH[name] = arch
    for model_type in arch.model_types:
        if model_type in _BY_MODEL_TYPE and _BY_MODEL_TYPE[model_type] is not arch:
            raise ValueError(f"model_type {model_type} is registered twice")
        _BY_MODEL_TYPE[model_type] = arch
    return arch


def supported_architectures() -> tuple[str, ...]:
    """Registered config.json `architectures` names, sorted."""
    return tuple(sorted(_BY_HF_ARCH))


def find_architecture(config: Mapping[str, Any]) -> tuple[Architecture, str]:
    """The registered family for a config.json and the HF name it matched, or a one-line EdgeAIError."""
    names = config.get("architectures") or []
    if isinstance(names, str):
        names = [names]
    for name in names:
        if isinstance(name, str) and name in _BY_HF_ARCH:
            return _BY_HF_ARCH[name], name
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in _BY_MODEL_TYPE:
        return _BY_MODEL_TYPE[model_type], model_type
    shown = ", ".join(str(n) for n in names) or "none listed"
    raise EdgeAIError(f"unsupported architecture {shown} (model_type {model_type!r}); "
                      f"supported: {', '.join(supported_architectures())}")

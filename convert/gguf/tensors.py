"""Tensor plumbing shared by every architecture: virtual tensors, transforms, shapes, output types.

A `VirtualTensor` is what the converter plans with: a Hugging Face-style name, its shape, the
checkpoint tensors it is made of, and a `build()` that reads them (only when it is written).
Most are one checkpoint tensor as is; *regroup* hooks rewrite the listing before name mapping,
e.g. `stack_experts()` turns `...experts.{0..E-1}.gate_proj.weight` into one 3-D
`...experts.gate_proj.weight`, `split_tensor()` cuts a fused tensor into parts. Shapes are known
from the shard headers and each hook's arithmetic, so the whole output is planned (and checked)
before any weight is read.

Transforms (`permute_rope`, `add_offset`) act on one built tensor and keep its shape; those marked
`layout_only` (they only move values) run on the stored bf16/f16 data, the others on float32.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import gguf
import numpy as np
from gguf.constants import MODEL_TENSOR as T
from gguf.constants import GGMLQuantizationType as Q

from convert.gguf.checkpoint import SourceTensor, to_float32
from convert.gguf.hparams import ModelConfig
from edge_ai.errors import EdgeAIError

Loader = Callable[[], tuple[np.ndarray, str]]
SliceLoader = Callable[[int, int, int], tuple[np.ndarray, str]]  # (axis, start, length) -> like Loader


@dataclass(frozen=True)
class VirtualTensor:
    """A tensor as the converter plans it: HF-style name, shape, the sources it reads, and how.

    `load()` returns the data in its stored type with that type's name ("F32", "F16", or "BF16" as
    uint16 bit patterns; see SourceTensor.load_raw), so bf16 checkpoints are never widened unless a
    transform needs arithmetic; `build()` returns float32. `load_slice`, when set, returns a range
    along one axis the same way, reading only that range."""

    name: str
    shape: tuple[int, ...]
    sources: tuple[SourceTensor, ...]
    load: Loader
    load_slice: SliceLoader | None = None
    stored_as: str | None = None  # what `load` returns when not the sources' type: "MXFP4" (GGML blocks)

    @classmethod
    def of(cls, source: SourceTensor) -> VirtualTensor:
        return cls(source.name, source.shape, (source,), lambda: (source.load_raw(), source.dtype),
                   lambda axis, start, length: (source.load_slice(axis, start, length), source.dtype))

    def build(self) -> np.ndarray:
        """The data as a fresh float32 array."""
        return to_float32(*self.load())

    @property
    def where(self) -> str:
        """The shard file(s) it comes from, for error messages."""
        files = sorted({s.file.name for s in self.sources})
        return files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more files)"


Tensors = dict[str, VirtualTensor]
Regroup = Callable[[Tensors, ModelConfig], Tensors]
Transform = Callable[[np.ndarray, ModelConfig], np.ndarray]
ShapeRule = Callable[[ModelConfig], tuple[int, ...]]
ExtraTensors = Callable[[ModelConfig], Sequence[tuple[T, np.ndarray]]]


# ---------------------------------------------------------------- regroup hooks (MoE and fused tensors)

EXPERT_PATTERN = r"^(?P<prefix>.+\.experts)\.(?P<xid>\d+)\.(?P<suffix>.+)$"


def stack_experts(pattern: str = EXPERT_PATTERN) -> Regroup:
    """Stack per-expert 2-D tensors into one 3-D tensor per (layer, projection).

    `pattern` must have the named groups `prefix`, `xid` (expert index) and `suffix`; the stacked
    tensor is named `{prefix}.{suffix}` (e.g. `model.layers.0.mlp.experts.gate_proj.weight`, which
    gguf-py's TensorNameMap maps to `blk.0.ffn_gate_exps.weight`) with shape (n_expert, *expert).
    Every expert 0..n_expert-1 (config.json num_local_experts / num_experts) must be present.
    """
    regex = re.compile(pattern)

    def regroup(tensors: Tensors, config: ModelConfig) -> Tensors:
        groups: dict[str, dict[int, VirtualTensor]] = {}
        out: Tensors = {}
        for name, tensor in tensors.items():
            m = regex.match(name)
            if m is None:
                out[name] = tensor
                continue
            groups.setdefault(f"{m['prefix']}.{m['suffix']}", {})[int(m["xid"])] = tensor
        for name, experts in groups.items():
            n_expert = config.n_expert
            missing = [i for i in range(n_expert) if i not in experts]
            if missing:
                some = next(iter(experts.values())).name
                raise EdgeAIError(f"expert {missing[0]} of {name} is missing (config.json has {n_expert} experts, "
                                  f"found e.g. {some}); the checkpoint is incomplete")
            extra = sorted(i for i in experts if i >= n_expert)
            if extra:
                raise EdgeAIError(f"{experts[extra[0]].name} is beyond the {n_expert} experts of config.json; "
                                  "the checkpoint does not match config.json")
            parts = [experts[i] for i in range(n_expert)]
            shape = parts[0].shape
            for part in parts:
                if part.shape != shape:
                    raise EdgeAIError(f"tensor {part.name} has shape {list(part.shape)} but expert 0 has "
                                      f"{list(shape)}; the checkpoint is corrupt")
            sources = tuple(s for p in parts for s in p.sources)
            out[name] = VirtualTensor(name, (n_expert, *shape), sources, _stacker(parts, (n_expert, *shape),
                                                                               _common_dtype(sources)))
        return out

    return regroup


_NUMPY_STORAGE = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _common_dtype(sources: Sequence[SourceTensor]) -> str:
    kinds = {s.dtype for s in sources}
    return kinds.pop() if len(kinds) == 1 else "F32"


def _stacker(parts: list[VirtualTensor], shape: tuple[int, ...], dtype: str) -> Loader:
    def load() -> tuple[np.ndarray, str]:
        out = np.empty(shape, dtype=_NUMPY_STORAGE[dtype])  # filled in place: peak = the stack + one expert
        for i, part in enumerate(parts):
            raw, kind = part.load()
            out[i] = raw if kind == dtype else to_float32(raw, kind)
        return out, dtype
    return load


def rename(pattern: str, replacement: str) -> Regroup:
    """Rename checkpoint tensors with `re.sub(pattern, replacement, name)`, e.g. strip the
    `language_model.` prefix of a multimodal checkpoint's text model."""
    regex = re.compile(pattern)

    def regroup(tensors: Tensors, config: ModelConfig) -> Tensors:
        out: Tensors = {}
        for name, tensor in tensors.items():
            new = regex.sub(replacement, name)
            if new in out:
                raise EdgeAIError(f"tensors {out[new].name} and {name} both become {new}; "
                                  "remove the duplicate from the checkpoint")
            out[new] = dataclasses.replace(tensor, name=new)
        return out

    return regroup


def split_tensor(suffix: str, parts: Sequence[str], axis: int) -> Regroup:
    """Cut every tensor whose name ends with `suffix` into equal `parts` along `axis`.

    The parts are named by replacing `suffix` with each entry of `parts`, e.g.
    `split_tensor("experts.gate_up_proj", ("experts.gate_proj.weight", "experts.up_proj.weight"), axis=1)`.
    """
    def regroup(tensors: Tensors, config: ModelConfig) -> Tensors:
        out: Tensors = {}
        for name, tensor in tensors.items():
            if not name.endswith(suffix):
                out[name] = tensor
                continue
            size = tensor.shape[axis]
            if size % len(parts):
                raise EdgeAIError(f"tensor {name} has {size} rows on axis {axis}, which does not split into "
                                  f"{len(parts)} equal parts; the checkpoint does not match config.json")
            step = size // len(parts)
            for i, part in enumerate(parts):
                new = name[: len(name) - len(suffix)] + part
                shape = tuple(step if a == axis else d for a, d in enumerate(tensor.shape))
                out[new] = VirtualTensor(new, shape, tensor.sources, _slicer(tensor, axis, i * step, step))
        return out

    return regroup


def _slicer(tensor: VirtualTensor, axis: int, start: int, length: int) -> Loader:
    """One part of `tensor`. A checkpoint tensor is read a part at a time (each byte once, the fused
    tensor never whole in memory); a built one (e.g. stacked experts) is built whole and cut."""
    def load() -> tuple[np.ndarray, str]:
        if tensor.load_slice is not None:
            return tensor.load_slice(axis, start, length)
        raw, dtype = tensor.load()
        return np.ascontiguousarray(np.take(raw, range(start, start + length), axis=axis)), dtype
    return load


# ---------------------------------------------------------------- transforms (shape-preserving)

def permute_rope(heads: str) -> Transform:
    """Reorder Q/K rows from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved one.

    `heads` names the head count of the tensor ("n_head" for Q, "n_head_kv" for K). Used only by the
    families llama.cpp runs with normal (GPT-J style) RoPE: llama, mistral, mixtral.
    """
    def transform(w: np.ndarray, config: ModelConfig) -> np.ndarray:
        n = config.dim(heads)
        if w.shape[0] % (2 * n):
            raise EdgeAIError(f"a Q/K tensor has {w.shape[0]} rows, not a multiple of 2 x {heads} ({n}); "
                              "the checkpoint does not match config.json")
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    transform.layout_only = True  # type: ignore[attr-defined]  # moves values: works on any dtype
    return transform


def is_layout_only(transform: Transform | None) -> bool:
    """True for transforms that only move values (so they run on stored bf16/f16 data as is)."""
    return transform is None or bool(getattr(transform, "layout_only", False))


def add_offset(offset: float) -> Transform:
    """Add a constant (Gemma stores RMSNorm weights as w - 1; llama.cpp wants w)."""
    def transform(w: np.ndarray, config: ModelConfig) -> np.ndarray:
        w += np.float32(offset)
        return w
    return transform


# ---------------------------------------------------------------- expected shapes (numpy order)

def _dims(*names: str) -> ShapeRule:
    def rule(c: ModelConfig) -> tuple[int, ...]:
        return tuple(math.prod(c.dim(n) for n in name.split("*")) for name in names)
    return rule


DEFAULT_SHAPES: Mapping[T, ShapeRule] = {
    T.TOKEN_EMBD: _dims("n_vocab", "n_embd"),
    T.OUTPUT: _dims("n_vocab", "n_embd"),
    T.OUTPUT_NORM: _dims("n_embd"),
    T.ATTN_NORM: _dims("n_embd"),
    T.FFN_NORM: _dims("n_embd"),
    T.ATTN_Q: _dims("n_head*head_dim", "n_embd"),
    T.ATTN_K: _dims("n_head_kv*head_dim", "n_embd"),
    T.ATTN_V: _dims("n_head_kv*head_dim", "n_embd"),
    T.ATTN_OUT: _dims("n_embd", "n_head*head_dim"),
    T.ATTN_Q_NORM: _dims("head_dim"),
    T.ATTN_K_NORM: _dims("head_dim"),
    T.ATTN_QKV: lambda c: ((c.n_head + 2 * c.n_head_kv) * c.head_dim, c.n_embd),
    T.FFN_GATE: _dims("n_ff", "n_embd"),
    T.FFN_UP: _dims("n_ff", "n_embd"),
    T.FFN_DOWN: _dims("n_embd", "n_ff"),
    T.FFN_GATE_INP: _dims("n_expert", "n_embd"),
    T.FFN_GATE_EXP: _dims("n_expert", "n_ff_exp", "n_embd"),
    T.FFN_UP_EXP: _dims("n_expert", "n_ff_exp", "n_embd"),
    T.FFN_DOWN_EXP: _dims("n_expert", "n_embd", "n_ff_exp"),
}

DENSE_BLOCK: tuple[T, ...] = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT,
                              T.FFN_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN)
MOE_BLOCK: tuple[T, ...] = (T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT,
                            T.FFN_NORM, T.FFN_GATE_INP, T.FFN_GATE_EXP, T.FFN_UP_EXP, T.FFN_DOWN_EXP)

# Kept in F32 whatever the outtype (as llama.cpp's converter does); 1-D tensors and biases always are.
KEEP_F32: frozenset[T] = frozenset({T.FFN_GATE_INP, T.FFN_GATE_INP_SHEXP, T.ROPE_FREQS,
                                    T.ROPE_FACTORS_LONG, T.ROPE_FACTORS_SHORT, T.POS_EMBD})


# ---------------------------------------------------------------- output types

OUTTYPES: Mapping[str, tuple[gguf.LlamaFileType, Q]] = {
    "f32": (gguf.LlamaFileType.ALL_F32, Q.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, Q.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
}


def storage_type(name: str, kind: T | None, shape: tuple[int, ...], outtype: str,
                 keep_f32: frozenset[T], source_dtype: str = "F32") -> Q:
    """The GGML type a tensor is written as: norms, biases, 1-D and `keep_f32` tensors stay F32;
    Q8_0 needs rows that divide into 32-element blocks, else the tensor falls back to 16 bits:
    BF16 when it is stored as BF16 (exact, and BF16 values may not fit F16), F16 otherwise (as
    llama.cpp's converter). MXFP4 data (gpt-oss experts) stays MXFP4 whatever the outtype."""
    wanted = OUTTYPES[outtype][1]
    if source_dtype == "MXFP4":  # already GGML blocks: written as they are, never expanded
        return Q.MXFP4
    if wanted == Q.F32 or len(shape) <= 1 or not name.endswith(".weight") or kind in keep_f32:
        return Q.F32
    if wanted == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.BF16 if source_dtype == "BF16" else Q.F16
    return wanted


def source_dtype(tensor: VirtualTensor) -> str:
    """The storage type of a planned tensor's data: what its loader says (MXFP4), else its sources'
    common type, else F32."""
    return tensor.stored_as or _common_dtype(tensor.sources)


_STORED_AS = {("F32", Q.F32), ("F16", Q.F16), ("BF16", Q.BF16), ("MXFP4", Q.MXFP4)}
_CHUNK_ELEMENTS = 1 << 22  # convert 4M values at a time: temporaries stay ~16 MB whatever the tensor


F16_MAX = float(np.finfo(np.float16).max)


class F16Overflow(ValueError):
    """Values beyond float16's range (they would silently become inf)."""

    def __init__(self, max_abs: float) -> None:
        super().__init__(max_abs)
        self.max_abs = max_abs


def encode(raw: np.ndarray, dtype: str, qtype: Q) -> np.ndarray:
    """Stored values (`dtype` as in SourceTensor.load_raw) as the array GGUFWriter.write_tensor_data
    writes for `qtype`. Same type: passed through. Otherwise converted a block of rows at a time
    into one preallocated output, so peak memory is the input plus the output."""
    if (dtype, qtype) in _STORED_AS:
        return np.ascontiguousarray(raw)
    rows = raw.reshape(-1, raw.shape[-1]) if raw.ndim else raw.reshape(1, 1)
    n_rows, n_cols = rows.shape
    if qtype in (Q.F32, Q.F16):
        out = np.empty((n_rows, n_cols), dtype=np.float32 if qtype == Q.F32 else np.float16)
    else:
        out = np.empty((n_rows, gguf.quant_shape_to_byte_shape((n_cols,), qtype)[0]), dtype=np.uint8)
    step = max(1, _CHUNK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        block = to_float32(rows[start:start + step], dtype)
        if qtype == Q.F16:
            peak = float(np.abs(block).max(initial=0.0))
            if peak > F16_MAX:
                raise F16Overflow(peak)
        if qtype in (Q.F32, Q.F16):
            out[start:start + step] = block
        else:
            out[start:start + step] = gguf.quants.quantize(np.ascontiguousarray(block), qtype)
    return out

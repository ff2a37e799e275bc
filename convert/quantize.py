"""Quantize a GGUF model with llama.cpp's own quantizer (`llama_model_quantize`), like llama-quantize.

    report = quantize(Path("model-f16.gguf"), Path("model-Q4_K_M.gguf"), "Q4_K_M",
                      tensor_types=[(r"ffn_down", "Q6_K")], progress=lambda done, total: ...)
    estimate = quantize(src, dst, "Q3_K_M", dry_run=True)   # sizes only, nothing written

Every llama.cpp type is offered by name (`QUANT_TYPES`, `types_table()`), with llama-quantize's
mixtures (Q4_K_M keeps attn_v / ffn_down at higher precision...), per-tensor overrides
(`PATTERN=TYPE`, a regex searched in each tensor name), output / token-embedding types and an
importance matrix (`convert.imatrix_file`). The inputs are checked before llama.cpp sees them
(`edge_ai.gguf_file.check_gguf`: truncated or malformed files would otherwise fail obscurely or
abort the process), every quantization is first planned with llama.cpp's dry run (exact output
types and size, the importance-matrix requirement, free disk space), and the output is written
to a temporary file renamed into place only on success.

Progress comes from llama.cpp's log ("[  12/ 236] blk.0.attn_q.weight ..."): the log callback is
taken over for the duration of the call (messages are still forwarded to the "llama.cpp" logger)
and the previous callback is restored afterwards. llama.cpp cannot be interrupted mid-file: an
exception raised by the progress callback is re-raised when the quantizer returns, and nothing is
written.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from convert.imatrix_file import Imatrix, read_imatrix
from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_path, check_free_space
from edge_ai.gguf_file import GGUFInfo, check_gguf, read_gguf, tensor_nbytes
from edge_ai.hardware import default_threads
from runtime.llamacpp import quantize as native
from runtime.llamacpp.log import logger as llama_log

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
MIB = 1024 * 1024


# --- the types -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantType:
    """One llama.cpp file type (llama_ftype), as llama-quantize names it."""

    name: str  # "Q4_K_M"
    ftype: int  # LLAMA_FTYPE_MOSTLY_*
    base_type: str  # the ggml type most weights get, e.g. "Q4_K"
    bpw: float  # typical bits per weight of a whole model (Llama-3.1-8B; nominal for pure types)
    description: str
    needs_imatrix: bool  # llama.cpp refuses (or produces garbage) without an importance matrix

    @property
    def nominal_bpw(self) -> float:
        """Bits per weight of `base_type` itself (block bytes * 8 / block values)."""
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[self.base_type]]
        return size * 8 / block


# name, LLAMA_FTYPE_* suffix, base ggml type, typical bpw (llama.cpp's tables for Llama-3.1-8B),
# description, needs an importance matrix (as this llama.cpp decides: every IQ1/IQ2/IQ3_XXS tensor
# needs one, IQ3_XS puts attn_k in IQ3_XXS). Ordered by size. NVFP4 is left out: the bundled
# llama.cpp has the enum value but refuses it as an output type.
_TYPE_ROWS: tuple[tuple[str, str, str, float, str, bool], ...] = (
    ("Q1_0", "MOSTLY_Q1_0", "Q1_0", 1.125, "1-bit, groups of 128 (for 1-bit-trained models)", False),
    ("TQ1_0", "MOSTLY_TQ1_0", "TQ1_0", 1.69, "ternary 1.69 bpw (for ternary-trained models, e.g. BitNet)", False),
    ("IQ1_S", "MOSTLY_IQ1_S", "IQ1_S", 2.00, "1.56 bpw i-quant; extreme quality loss", True),
    ("TQ2_0", "MOSTLY_TQ2_0", "TQ2_0", 2.06, "ternary 2.06 bpw (for ternary-trained models)", False),
    ("IQ1_M", "MOSTLY_IQ1_M", "IQ1_M", 2.15, "1.75 bpw i-quant; extreme quality loss", True),
    ("IQ2_XXS", "MOSTLY_IQ2_XXS", "IQ2_XXS", 2.38, "2.06 bpw i-quant", True),
    ("IQ2_XS", "MOSTLY_IQ2_XS", "IQ2_XS", 2.59, "2.31 bpw i-quant", True),
    ("IQ2_S", "MOSTLY_IQ2_S", "IQ2_XS", 2.74, "2.5 bpw i-quant mix", True),
    ("IQ2_M", "MOSTLY_IQ2_M", "IQ2_S", 2.93, "2.7 bpw i-quant mix", True),
    ("Q2_K_S", "MOSTLY_Q2_K_S", "Q2_K", 2.97, "2-bit k-quant, small mix; +3.18 ppl @ Llama-3-8B", True),
    ("Q2_K", "MOSTLY_Q2_K", "Q2_K", 3.16, "2-bit k-quant mix; +3.52 ppl @ Llama-3-8B", False),
    ("IQ3_XXS", "MOSTLY_IQ3_XXS", "IQ3_XXS", 3.25, "3.06 bpw i-quant", True),
    ("IQ3_XS", "MOSTLY_IQ3_XS", "IQ3_S", 3.50, "3.3 bpw i-quant mix", True),
    ("Q3_K_S", "MOSTLY_Q3_K_S", "Q3_K", 3.64, "3-bit k-quant, small mix; +1.63 ppl @ Llama-3-8B", False),
    ("IQ3_S", "MOSTLY_IQ3_S", "IQ3_S", 3.66, "3.44 bpw i-quant", False),
    ("IQ3_M", "MOSTLY_IQ3_M", "IQ3_S", 3.76, "3.66 bpw i-quant mix", False),
    ("Q3_K_M", "MOSTLY_Q3_K_M", "Q3_K", 4.00, "3-bit k-quant, medium mix; +0.66 ppl @ Llama-3-8B", False),
    ("Q3_K_L", "MOSTLY_Q3_K_L", "Q3_K", 4.30, "3-bit k-quant, large mix; +0.56 ppl @ Llama-3-8B", False),
    ("MXFP4_MOE", "MOSTLY_MXFP4_MOE", "MXFP4", 4.25, "MXFP4 for MoE experts, Q8_0 elsewhere", False),
    ("IQ4_XS", "MOSTLY_IQ4_XS", "IQ4_XS", 4.46, "4.25 bpw non-linear quantization", False),
    ("Q4_0", "MOSTLY_Q4_0", "Q4_0", 4.64, "4-bit legacy, groups of 32; +0.47 ppl @ Llama-3-8B", False),
    ("Q4_K_S", "MOSTLY_Q4_K_S", "Q4_K", 4.67, "4-bit k-quant, small mix; +0.27 ppl @ Llama-3-8B", False),
    ("IQ4_NL", "MOSTLY_IQ4_NL", "IQ4_NL", 4.68, "4.5 bpw non-linear quantization, groups of 32", False),
    ("Q4_K_M", "MOSTLY_Q4_K_M", "Q4_K", 4.89, "4-bit k-quant, medium mix (recommended); +0.18 ppl @ Llama-3-8B",
     False),
    ("Q4_1", "MOSTLY_Q4_1", "Q4_1", 5.11, "4-bit legacy with offsets; +0.45 ppl @ Llama-3-8B", False),
    ("Q5_0", "MOSTLY_Q5_0", "Q5_0", 5.57, "5-bit legacy; +0.13 ppl @ Llama-3-8B", False),
    ("Q5_K_S", "MOSTLY_Q5_K_S", "Q5_K", 5.57, "5-bit k-quant, small mix; +0.10 ppl @ Llama-3-8B", False),
    ("Q5_K_M", "MOSTLY_Q5_K_M", "Q5_K", 5.70, "5-bit k-quant, medium mix; +0.06 ppl @ Llama-3-8B", False),
    ("Q5_1", "MOSTLY_Q5_1", "Q5_1", 6.04, "5-bit legacy with offsets; +0.11 ppl @ Llama-3-8B", False),
    ("Q6_K", "MOSTLY_Q6_K", "Q6_K", 6.56, "6-bit k-quant; +0.02 ppl @ Llama-3-8B", False),
    ("Q8_0", "MOSTLY_Q8_0", "Q8_0", 8.50, "8-bit; nearly lossless, +0.003 ppl @ Llama-3-8B", False),
    ("BF16", "MOSTLY_BF16", "BF16", 16.0, "bfloat16, lossless from BF16 checkpoints", False),
    ("F16", "MOSTLY_F16", "F16", 16.0, "float16, ~lossless", False),
    ("F32", "ALL_F32", "F32", 32.0, "float32, no quantization", False),
)
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def _build_types() -> dict[str, QuantType]:
    types: dict[str, QuantType] = {}
    for name, ftype_name, base, bpw, description, needs_imatrix in _TYPE_ROWS:
        ftype = native.ftype(ftype_name)
        if ftype is None or base not in GGMLQuantizationType.__members__:
            continue  # not in this llama.cpp / gguf-py build
        types[name] = QuantType(name, ftype, base, bpw, description, needs_imatrix)
    return types


QUANT_TYPES: dict[str, QuantType] = _build_types()
"""Every quantization type by name, smallest first."""

# ggml types a tensor can be stored as (for --tensor-type, output and embedding types): the
# storage types gguf-py knows and this llama.cpp supports, minus helper/integer types.
_NOT_STORAGE = {"Q8_1", "Q8_K", "I8", "I16", "I32", "I64", "F64"}
TENSOR_TYPES: dict[str, int] = {
    t.name: t.value for t in GGMLQuantizationType
    if t.name not in _NOT_STORAGE and t.value < native.GGML_TYPE_COUNT
}
_UNQUANTIZED = {"F32", "F16", "BF16"}


def quant_types() -> list[QuantType]:
    return list(QUANT_TYPES.values())


def resolve_type(name: str) -> QuantType:
    """A quantization type by (case-insensitive) name; aliases Q3_K/Q4_K/Q5_K mean the _M mixes."""
    key = name.strip().upper()
    key = _ALIASES.get(key, key)
    if key in QUANT_TYPES:
        return QUANT_TYPES[key]
    raise EdgeAIError(f"unknown quantization type {name!r}; valid types: {', '.join(QUANT_TYPES)}")


def resolve_tensor_type(name: str, what: str = "tensor type") -> tuple[str, int]:
    """A ggml storage type by name (e.g. "q6_k" -> ("Q6_K", 14))."""
    key = name.strip().upper()
    if key in TENSOR_TYPES:
        return key, TENSOR_TYPES[key]
    hint = ""
    mixture = re.fullmatch(r"(Q[2-5]_K)_[SML]", key)
    if mixture:
        hint = f" ({name} is a file mixture; the tensor type is {mixture.group(1)})"
    raise EdgeAIError(f"unknown {what} {name!r}{hint}; valid tensor types: {', '.join(TENSOR_TYPES)}")


def parse_tensor_type(spec: str) -> tuple[str, str]:
    """'PATTERN=TYPE' (as for llama-quantize --tensor-type) -> (pattern, TYPE)."""
    pattern, sep, type_name = spec.rpartition("=")
    if not sep or not pattern or not type_name:
        raise EdgeAIError(f"tensor type override {spec!r} must look like PATTERN=TYPE, e.g. 'attn_v=Q6_K'")
    return pattern, resolve_tensor_type(type_name)[0]


def default_output_path(src: Path, qtype: str) -> Path:
    """model-f16.gguf + Q4_K_M -> model-Q4_K_M.gguf (an existing type suffix is replaced)."""
    name = resolve_type(qtype).name
    stem = src.name.removesuffix(".gguf")
    suffixes = sorted([*QUANT_TYPES, *_ALIASES, "FP16", "FP32"], key=len, reverse=True)
    stem = re.sub(rf"[-_.]({'|'.join(suffixes)})$", "", stem, flags=re.IGNORECASE)
    return src.with_name(f"{stem}-{name}.gguf")


def types_table() -> Any:
    """All types as a rich Table (like llama-quantize's list)."""
    from rich.table import Table

    table = Table(title="quantization types")
    for column, justify in (("type", "left"), ("bpw", "right"), ("imatrix", "center"), ("description", "left")):
        table.add_column(column, justify=justify)
    for t in QUANT_TYPES.values():
        table.add_row(t.name, f"{t.bpw:.2f}", "required" if t.needs_imatrix else "", t.description)
    return table


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorResult:
    name: str
    shape: tuple[int, ...]  # ggml order, innermost first
    source_type: str
    type: str
    nbytes: int


@dataclass(frozen=True)
class QuantizeReport:
    src: Path
    dst: Path | None  # None for a dry run
    qtype: str
    dry_run: bool
    input_bytes: int
    output_bytes: int  # the file written, or the estimate for a dry run
    n_params: int
    input_bpw: float  # tensor bits per weight, as llama.cpp reports it
    output_bpw: float
    seconds: float
    tensors: tuple[TensorResult, ...] = ()
    fallbacks: int = 0  # tensors whose rows did not fit the type's blocks (llama.cpp chose another)
    needs_imatrix: bool = False
    imatrix_entries: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tensor_type_counts(self) -> dict[str, int]:
        return dict(Counter(t.type for t in self.tensors))

    @property
    def output_mib(self) -> float:
        return self.output_bytes / MIB

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["src"] = str(self.src)
        data["dst"] = str(self.dst) if self.dst else None
        data["tensor_type_counts"] = self.tensor_type_counts
        data["tensors"] = [{**asdict(t), "shape": list(t.shape)} for t in self.tensors]
        data["warnings"] = list(self.warnings)
        return data


# --- quantizing ----------------------------------------------------------------------------------


def quantize(src: Path, dst: Path, qtype: str, *, imatrix: Path | str | Imatrix | None = None,
             tensor_types: Sequence[tuple[str, str]] = (), output_type: str | None = None,
             embedding_type: str | None = None, allow_requantize: bool = True, pure: bool = False,
             threads: int = 0, dry_run: bool = False, progress: Progress | None = None) -> QuantizeReport:
    """Quantize `src` to `dst` as `qtype` and report sizes; with dry_run, only plan and estimate.

    tensor_types: (regex, ggml type) pairs; the first pattern found in a tensor's name sets its type.
    output_type / embedding_type: ggml types for output.weight / token_embd.weight.
    pure: no k-quant mixture, every quantizable tensor gets the base type.
    progress(done_tensors, total_tensors) is called from this thread while llama.cpp works.
    """
    started = time.perf_counter()
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    qt = resolve_type(qtype)
    overrides = [(pattern, *resolve_tensor_type(type_name)) for pattern, type_name in tensor_types]
    out_type = resolve_tensor_type(output_type, "output type") if output_type else None
    emb_type = resolve_tensor_type(embedding_type, "embedding type") if embedding_type else None
    info = check_gguf(src)
    shards = int(info.metadata.get("split.count", 1) or 1)
    if shards > 1:  # this shard's tensor list alone would mis-plan imatrix use, overrides and sizes
        raise EdgeAIError(f"{src.name} is one of {shards} shards of a split model; merge them first "
                          "(llama.cpp's `llama-gguf-split --merge`) and quantize the merged file")
    _check_overrides(info, overrides)
    matrix = _load_imatrix(imatrix)
    imatrix_values = _imatrix_values(matrix, info) if matrix else {}
    if not dry_run and src.resolve() == dst.resolve():
        raise EdgeAIError(f"the output {dst} is the input model; choose another output file")

    job = _Job(info, qt, overrides, out_type, emb_type, imatrix_values, matrix, allow_requantize, pure,
               threads or default_threads())
    plan = job.run(None, progress=None)
    if dry_run:
        return job.report(plan, None, time.perf_counter() - started)

    if plan.needs_imatrix and not imatrix_values:
        raise EdgeAIError(
            f"{qt.name} quantization of {src.name} needs an importance matrix (without one the "
            "low-bit tensors come out as garbage); pass --imatrix FILE (make one with `edge-ai imatrix`)"
        )
    if not allow_requantize:
        already = [t for t in plan.tensors if t.source_type not in _UNQUANTIZED and t.type != t.source_type]
        if already:
            raise EdgeAIError(
                f"{src.name} is already quantized ({already[0].name} is {already[0].source_type}); "
                "allow requantizing (quality suffers) or start from the F16/BF16/F32 GGUF"
            )
    check_free_space(dst, plan.estimated_bytes)
    with atomic_path(dst) as tmp:
        job.run(tmp, progress=progress)
        out = read_gguf(tmp)  # llama.cpp wrote a complete, parseable file
        result = _Plan(
            tensors=tuple(
                TensorResult(t.name, t.shape, plan.source_types.get(t.name, t.ggml_type), t.ggml_type, t.nbytes)
                for t in out.tensors
            ),
            estimated_bytes=out.file_size, needs_imatrix=plan.needs_imatrix, fallbacks=plan.fallbacks,
            warnings=plan.warnings, source_types=plan.source_types,
        )
    return job.report(result, dst, time.perf_counter() - started)


@dataclass(frozen=True)
class _Plan:
    tensors: tuple[TensorResult, ...]
    estimated_bytes: int
    needs_imatrix: bool
    fallbacks: int
    warnings: tuple[str, ...]
    source_types: dict[str, str]


class _Job:
    """One llama_model_quantize configuration, runnable as a dry run or for real."""

    def __init__(self, info: GGUFInfo, qt: QuantType, overrides: list[tuple[str, str, int]],
                 out_type: tuple[str, int] | None, emb_type: tuple[str, int] | None,
                 imatrix_values: dict[str, Any], matrix: Imatrix | None, allow_requantize: bool, pure: bool,
                 threads: int) -> None:
        self.info, self.qt = info, qt
        self.overrides, self.out_type, self.emb_type = overrides, out_type, emb_type
        self.imatrix_values, self.matrix = imatrix_values, matrix
        self.allow_requantize, self.pure, self.threads = allow_requantize, pure, threads

    def run(self, dst: Path | None, progress: Progress | None) -> _Plan:
        """Quantize to `dst`, or plan (llama.cpp's dry run) when `dst` is None."""
        capture = _LogCapture(len(self.info.tensors), progress)
        status, callback_error = native.quantize_model(
            self.info.path, dst, ftype=self.qt.ftype, threads=self.threads, allow_requantize=self.allow_requantize,
            pure=self.pure, output_type=self.out_type[1] if self.out_type else None,
            embedding_type=self.emb_type[1] if self.emb_type else None,
            overrides=[(pattern, type_id) for pattern, _, type_id in self.overrides],
            imatrix=self.imatrix_values, metadata=self._imatrix_metadata() if self.imatrix_values else (),
            on_log=capture.feed,
        )
        if status != 0:
            raise self._failure(capture)
        if callback_error is not None:
            raise callback_error
        if progress is not None:
            progress(len(self.info.tensors), len(self.info.tensors))
        return self._plan(capture)

    def _imatrix_metadata(self) -> list[tuple[str, str | int]]:
        """Provenance in the output's metadata, as llama-quantize records it."""
        matrix = self.matrix
        values: list[tuple[str, str | int]] = []
        if matrix is not None and matrix.path is not None:
            values.append(("quantize.imatrix.file", matrix.path.name))
        if matrix is not None and matrix.datasets:
            values.append(("quantize.imatrix.dataset", matrix.datasets[0]))
        values.append(("quantize.imatrix.entries_count", len(self.imatrix_values)))
        if matrix is not None and matrix.chunk_count > 0:
            values.append(("quantize.imatrix.chunks_count", matrix.chunk_count))
        return values

    def _plan(self, capture: _LogCapture) -> _Plan:
        tensors: list[TensorResult] = []
        total = self.info.data_offset
        for t in self.info.tensors:
            new_type = capture.target_types.get(t.name, t.ggml_type)
            nbytes = tensor_nbytes(t.shape, new_type) if new_type != t.ggml_type else t.nbytes
            tensors.append(TensorResult(t.name, t.shape, t.ggml_type, new_type, nbytes))
            total += _align(nbytes, self.info.alignment)
        return _Plan(tuple(tensors), total, capture.needs_imatrix, capture.fallbacks, tuple(capture.warnings),
                     {t.name: t.ggml_type for t in self.info.tensors})

    def report(self, plan: _Plan, dst: Path | None, seconds: float) -> QuantizeReport:
        n_params = self.info.parameter_count
        data_bytes = sum(t.nbytes for t in plan.tensors)
        return QuantizeReport(
            src=self.info.path, dst=dst, qtype=self.qt.name, dry_run=dst is None,
            input_bytes=self.info.file_size, output_bytes=plan.estimated_bytes, n_params=n_params,
            input_bpw=self.info.bits_per_weight, output_bpw=8 * data_bytes / n_params if n_params else 0.0,
            seconds=seconds, tensors=plan.tensors, fallbacks=plan.fallbacks, needs_imatrix=plan.needs_imatrix,
            imatrix_entries=len(self.imatrix_values), warnings=plan.warnings,
        )

    def _failure(self, capture: _LogCapture) -> EdgeAIError:
        reason = capture.failure or "; ".join(capture.errors[-2:]) or "no reason given (see the log)"
        name = self.info.path.name
        if "requires an imatrix" in reason or "Missing importance matrix" in reason:
            tensor = f" for {capture.offending_tensor}" if capture.offending_tensor else ""
            return EdgeAIError(
                f"{self.qt.name} quantization of {name} needs an importance matrix{tensor}; "
                "pass --imatrix FILE (make one with `edge-ai imatrix`)"
            )
        if "requantizing from type" in reason:
            return EdgeAIError(
                f"{name} is already quantized ({reason}); allow requantizing or start from the F16/BF16/F32 GGUF"
            )
        if "imatrix size" in reason:
            return EdgeAIError(f"the importance matrix does not match {name} ({reason}); compute it for this model")
        if "regex" in reason.lower():
            return EdgeAIError(f"a tensor type pattern is not a valid regular expression ({reason})")
        return EdgeAIError(f"llama.cpp could not quantize {name} to {self.qt.name}: {reason}")


# --- llama.cpp's log -----------------------------------------------------------------------------

_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_DRY_TARGET = re.compile(r"->\s*[\d.]+\s*MiB\s*\((\w+)\)")
_CONVERTING = re.compile(r"converting to (\w+)")
_FALLBACKS = re.compile(r"(\d+) of \d+ tensor\(s\) required fallback")
_FAILED = re.compile(r"failed to quantize: (.*)")
_OFFENDING = re.compile(r"offending tensor: (\S+)|Missing importance matrix for tensor (\S+)")


class _LogCapture:
    """Parses llama_model_quantize's log for progress, planned types, warnings and the failure reason."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress = total, progress
        self.target_types: dict[str, str] = {}
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.failure: str | None = None
        self.offending_tensor: str | None = None
        self.needs_imatrix = False
        self.fallbacks = 0
        self._tensor: str | None = None
        self._level = logging.INFO
        self._line = ""

    def feed(self, level: int, text: str) -> None:
        """One piece of llama.cpp's log at `level` (a `logging` level)."""
        self._level = level
        self._line += text
        match = _TENSOR_LINE.match(text)
        if match:
            index, _, name = int(match.group(1)), int(match.group(2)), match.group(3)
            self._tensor = name
            if self.progress is not None:
                self.progress(index - 1, self.total)
        elif self._tensor is not None:
            target = _DRY_TARGET.search(text) or _CONVERTING.search(text)
            if target:
                self.target_types[self._tensor] = target.group(1).upper()
        if "\n" in self._line:
            lines = self._line.split("\n")
            self._line = lines.pop()
            for line in lines:
                self._complete(line)

    def _complete(self, line: str) -> None:
        if not line.strip():
            return
        if llama_log.isEnabledFor(self._level):
            llama_log.log(self._level, line)
        if self._level >= logging.ERROR:
            self.errors.append(line.strip())
        elif self._level == logging.WARNING and ("WARNING" in line or "falling back" in line):
            self.warnings.append(" ".join(line.removeprefix("warning:").split()))
        if "will require an imatrix" in line:
            self.needs_imatrix = True
        match = _FAILED.search(line)
        if match:
            self.failure = match.group(1).strip()
        match = _OFFENDING.search(line)
        if match:
            self.offending_tensor = match.group(1) or match.group(2)
        match = _FALLBACKS.search(line)
        if match:
            self.fallbacks = int(match.group(1))


# --- checks and helpers --------------------------------------------------------------------------


def _check_overrides(info: GGUFInfo, overrides: list[tuple[str, str, int]]) -> None:
    names = [t.name for t in info.tensors]
    for pattern, type_name, _ in overrides:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise EdgeAIError(f"tensor type pattern {pattern!r} is not a valid regular expression ({exc})") from None
        if not any(regex.search(name) for name in names):
            raise EdgeAIError(
                f"tensor type pattern {pattern!r} (-> {type_name}) matches no tensor of {info.path.name}; "
                f"tensor names look like {names[min(2, len(names) - 1)]!r}"
            )


def _load_imatrix(imatrix: Path | str | Imatrix | None) -> Imatrix | None:
    if imatrix is None or isinstance(imatrix, Imatrix):
        return imatrix
    return read_imatrix(Path(imatrix))


def _imatrix_values(matrix: Imatrix, info: GGUFInfo) -> dict[str, Any]:
    """The importance values llama.cpp wants, checked against the model's tensors first."""
    tensors = {t.name: t for t in info.tensors}
    values: dict[str, Any] = {}
    where = matrix.path.name if matrix.path else "the importance matrix"
    for name, entry in matrix.entries.items():
        tensor = tensors.get(name)
        if tensor is None:
            continue  # llama.cpp ignores entries for tensors the model does not have
        n_mat = tensor.shape[2] if len(tensor.shape) > 2 else 1
        expected = tensor.shape[0] * n_mat
        flat = entry.mean().reshape(-1)
        if flat.size != expected:
            if name == "token_embd.weight":
                continue  # llama.cpp skips this mismatch too
            raise EdgeAIError(
                f"{where} does not match {info.path.name}: {name} has {flat.size} values but the tensor needs "
                f"{expected}; compute the importance matrix for this model"
            )
        if not all(math.isfinite(v) for v in (float(flat.min()), float(flat.max()))):
            raise EdgeAIError(f"{where}: entry {name} contains NaN or infinite values; recompute it")
        values[name] = flat
    if not values:
        raise EdgeAIError(
            f"{where} has no entry for any tensor of {info.path.name}; it was computed for another model"
        )
    return values


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment



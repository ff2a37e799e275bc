"""Read and write llama.cpp importance-matrix files (what `llama-imatrix` produces).

An importance matrix holds, for every weight matrix of a model, the mean squared activation of
each input column over some calibration text. Low-bit quantizers (IQ1/IQ2, Q2_K_S...) weight their
rounding error by it, so the columns that matter most are kept most precisely.

The current format is a GGUF file with `general.type = "imatrix"` and, per weight tensor `NAME`:

    NAME.in_sum2  F32, ggml shape [n_per_row, n_mat]  sum over tokens of x[col]**2, per expert
    NAME.counts   F32, ggml shape [1, n_mat]          how many tokens each expert saw

(n_mat is 1 for a dense matrix and the expert count for a stacked MoE tensor), plus metadata
`imatrix.datasets` (array of strings), `imatrix.chunk_count` and `imatrix.chunk_size` (uint32).
The legacy `.dat` format (a count, then name / ncall / values records, then an optional chunk
count and dataset name) is read too.

    entries = {"blk.0.attn_q.weight": ImatrixEntry(in_sum2, counts), ...}
    write_imatrix(path, entries, datasets=["wiki.txt"], chunk_count=100, chunk_size=512)
    im = read_imatrix(path)
    im.entries["blk.0.attn_q.weight"].mean()  # mean squared activation per column, what llama.cpp wants
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from gguf import GGUFValueType, GGUFWriter

from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_path
from edge_ai.gguf_file import GGUFInfo, TensorInfo, read_gguf

IMATRIX_TYPE = "imatrix"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUM_SUFFIX = ".in_sum2"
COUNT_SUFFIX = ".counts"
# MoE expert usage (layer -> times each expert was chosen), for expert offloading. llama.cpp's
# imatrix loaders only take tensors ending in .in_sum2/.in_sum/.counts, so these ride along unseen.
EXPERT_COUNTS_SUFFIX = ".ffn_expert_counts"
EXPERT_COUNTS_KEY = "imatrix.expert_counts"

_FIX = "recompute it with `edge-ai imatrix` or llama-imatrix"


@dataclass(frozen=True)
class ImatrixEntry:
    """Activation statistics of one weight tensor.

    in_sum2: float32 (n_mat, n_per_row): per expert, the sum over tokens of each input column squared.
    counts:  float32 (n_mat,): how many tokens each expert (or the one dense matrix) saw.
    """

    in_sum2: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        in_sum2 = np.asarray(self.in_sum2, dtype=np.float32)
        counts = np.asarray(self.counts, dtype=np.float32).reshape(-1)
        if in_sum2.ndim == 1:
            in_sum2 = in_sum2.reshape(1, -1)
        if in_sum2.ndim != 2 or in_sum2.shape[0] != counts.size or in_sum2.shape[1] == 0:
            raise ValueError(
                f"ImatrixEntry needs in_sum2 of shape (n_mat, n_per_row) and counts of shape (n_mat,), "
                f"got {in_sum2.shape} and {counts.shape}"
            )
        object.__setattr__(self, "in_sum2", in_sum2)
        object.__setattr__(self, "counts", counts)

    @property
    def n_mat(self) -> int:
        return int(self.counts.size)

    @property
    def n_per_row(self) -> int:
        return int(self.in_sum2.shape[1])

    def mean(self) -> np.ndarray:
        """Mean squared activation per column, (n_mat, n_per_row); 1 for an expert that saw no tokens.

        This is exactly what llama-quantize hands to the quantizer.
        """
        counts = self.counts.reshape(-1, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(counts > 0, self.in_sum2 / np.where(counts > 0, counts, 1), 1.0)
        return values.astype(np.float32)


@dataclass(frozen=True)
class Imatrix:
    """A whole importance-matrix file."""

    entries: dict[str, ImatrixEntry]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    path: Path | None = None
    legacy: bool = False


# --- writing -------------------------------------------------------------------------------------


def write_imatrix(path: str | os.PathLike[str], entries: Mapping[str, ImatrixEntry], datasets: Sequence[str],
                  chunk_count: int, chunk_size: int, expert_counts: Mapping[int, np.ndarray] | None = None) -> Path:
    """Write `entries` as a llama.cpp GGUF imatrix file (atomically) and return its path.

    `expert_counts` (MoE models) adds `blk.N.ffn_expert_counts` I32 tensors and a flag key.
    """
    path = Path(path)
    if not entries:
        raise EdgeAIError("the importance matrix is empty (no tensor saw any activation); calibrate on more text")
    for name, entry in entries.items():
        if not isinstance(entry, ImatrixEntry):
            raise TypeError(f"entry {name!r} must be an ImatrixEntry, not {type(entry).__name__}")
        if not (np.isfinite(entry.in_sum2).all() and np.isfinite(entry.counts).all()):
            raise EdgeAIError(f"importance matrix entry {name!r} contains NaN or infinite values; {_FIX}")
    with atomic_path(path) as tmp:
        writer = GGUFWriter(tmp, arch="")
        writer.kv_data[0].pop("general.architecture", None)  # llama-imatrix writes none
        writer.add_type(IMATRIX_TYPE)
        writer.add_key_value(KEY_DATASETS, [str(d) for d in datasets], GGUFValueType.ARRAY,
                             sub_type=GGUFValueType.STRING)
        writer.add_uint32(KEY_CHUNK_COUNT, int(chunk_count))
        writer.add_uint32(KEY_CHUNK_SIZE, int(chunk_size))
        if expert_counts:
            writer.add_bool(EXPERT_COUNTS_KEY, True)
        for name in sorted(entries):
            entry = entries[name]
            # numpy (n_mat, n_per_row) is ggml [n_per_row, n_mat]; counts (n_mat, 1) is ggml [1, n_mat].
            writer.add_tensor(name + SUM_SUFFIX, np.ascontiguousarray(entry.in_sum2, dtype=np.float32))
            writer.add_tensor(name + COUNT_SUFFIX, entry.counts.reshape(-1, 1).astype(np.float32))
        for layer in sorted(expert_counts or {}):
            usage = np.ascontiguousarray(expert_counts[layer], dtype=np.int32)
            writer.add_tensor(f"blk.{layer}{EXPERT_COUNTS_SUFFIX}", usage)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


# --- reading -------------------------------------------------------------------------------------


def read_imatrix(path: str | os.PathLike[str]) -> Imatrix:
    """Read a GGUF (or legacy .dat) importance matrix; every malformation is a one-line EdgeAIError."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise EdgeAIError(f"no such importance matrix file: {path}") from None
    except IsADirectoryError:
        raise EdgeAIError(f"{path} is a directory; pass the imatrix file inside it") from None
    except OSError as exc:
        raise EdgeAIError(f"cannot read {path}: {exc.strerror}") from None
    if magic == b"GGUF":
        return _read_gguf_imatrix(path)
    return _read_legacy_imatrix(path)


def _read_gguf_imatrix(path: Path) -> Imatrix:
    info = read_gguf(path)
    kind = info.metadata.get("general.type")
    if kind != IMATRIX_TYPE:
        what = "a model" if kind in (None, "model") and info.architecture else f"general.type {kind!r}"
        raise EdgeAIError(f"{path.name} is {what}, not an importance matrix; pass the imatrix .gguf file")
    tensors = {t.name: t for t in info.tensors}
    names = sorted({n.removesuffix(SUM_SUFFIX) for n in tensors if n.endswith(SUM_SUFFIX)}
                   | {n.removesuffix(COUNT_SUFFIX) for n in tensors if n.endswith(COUNT_SUFFIX)})
    if not names:
        raise EdgeAIError(f"{path.name} holds no importance data (no .in_sum2 tensors); {_FIX}")
    entries: dict[str, ImatrixEntry] = {}
    with open(path, "rb") as f:
        for name in names:
            sums, counts = tensors.get(name + SUM_SUFFIX), tensors.get(name + COUNT_SUFFIX)
            if sums is None or counts is None:
                raise EdgeAIError(f"{path.name}: {name} has sums without counts or counts without sums; {_FIX}")
            sum_values, count_values = _read_f32(f, info, sums), _read_f32(f, info, counts)
            n_mat = count_values.size
            if n_mat == 0 or sum_values.size % n_mat or sum_values.size == 0:
                raise EdgeAIError(
                    f"{path.name}: {name} has {sum_values.size} sums for {n_mat} counts, which do not divide; {_FIX}"
                )
            entries[name] = ImatrixEntry(sum_values.reshape(n_mat, -1), count_values)
    datasets = info.metadata.get(KEY_DATASETS, [])
    return Imatrix(
        entries=entries,
        datasets=[str(d) for d in datasets] if isinstance(datasets, list) else [],
        chunk_count=_uint(info.metadata.get(KEY_CHUNK_COUNT)),
        chunk_size=_uint(info.metadata.get(KEY_CHUNK_SIZE)),
        path=path,
    )


def _read_f32(f: BinaryIO, info: GGUFInfo, tensor: TensorInfo) -> np.ndarray:
    if tensor.ggml_type != "F32":
        raise EdgeAIError(f"{info.path.name}: {tensor.name} is {tensor.ggml_type} but must be F32; {_FIX}")
    n = math.prod(tensor.shape)
    if tensor.offset + 4 * n > info.file_size:
        raise EdgeAIError(
            f"{info.path.name} is truncated: {tensor.name} needs bytes up to {tensor.offset + 4 * n} "
            f"but the file has {info.file_size}; {_FIX}"
        )
    f.seek(tensor.offset)
    return np.frombuffer(f.read(4 * n), dtype="<f4").astype(np.float32)


def _uint(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _read_legacy_imatrix(path: Path) -> Imatrix:
    """The pre-GGUF format: int32 n_entries, then per entry (int32 name length, name, int32 ncall,
    int32 nval, nval float32 sums), then optionally int32 chunk count, int32 length, dataset name."""
    data = path.read_bytes()
    bad = EdgeAIError(f"{path.name} is neither a GGUF nor a legacy .dat importance matrix (or it is truncated); {_FIX}")
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise bad
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    (n_entries,) = take("<i")
    if n_entries < 1 or n_entries * 16 > len(data):
        raise bad
    entries: dict[str, ImatrixEntry] = {}
    for _ in range(n_entries):
        (name_len,) = take("<i")
        if name_len <= 0 or pos + name_len > len(data):
            raise bad
        name = data[pos:pos + name_len].decode("utf-8", errors="replace")
        pos += name_len
        ncall, nval = take("<ii")
        if nval < 1 or pos + 4 * nval > len(data):
            raise bad
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        # llama-quantize uses sums / ncall for legacy files, which is what mean() gives.
        entries[name] = ImatrixEntry(sums.reshape(1, -1), np.array([max(ncall, 0)], dtype=np.float32))
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):
        (chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if 0 < length <= len(data) - pos:
                datasets.append(data[pos:pos + length].decode("utf-8", errors="replace"))
    return Imatrix(entries=entries, datasets=datasets, chunk_count=max(chunk_count, 0), chunk_size=0,
                   path=path, legacy=True)

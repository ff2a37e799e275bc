"""Read a local Hugging Face checkpoint folder without loading the weights.

`open_checkpoint(src)` reads config.json and the tensor *headers* of every shard (safetensors
headers are a few KB of JSON), so the converter can plan the whole output from names, shapes and
dtypes before a single weight is read. Each `SourceTensor.load_raw()` then reads just that tensor's
bytes with a plain `read` (no mmap, so nothing stays resident) into numpy in its stored type;
`to_float32()` widens it when arithmetic needs float32. `load_slice()` reads only a range along one
axis (a part of a fused tensor), so cutting a tensor in parts never holds or reads it whole.

Safetensors are parsed here directly (8-byte header length, JSON header, raw little-endian data):
no torch needed, and bf16 is widened to float32 with a shift. PyTorch pickle checkpoints
(`pytorch_model*.bin`, `*.pt`, `*.pth`) can run arbitrary code when unpickled, so they are refused
unless the caller passes `allow_pickle=True`; even then they go through
`torch.load(weights_only=True)`, which only rebuilds tensors.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_ai.errors import EdgeAIError

SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors spec caps the JSON header at 100 MB

# safetensors dtype -> (numpy dtype of the stored bytes, bytes per element)
_ST_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),  # widened to float32 by a 16-bit shift
    "U8": ("u1", 1),  # bytes of a quantized format (MXFP4 blocks and scales): only an architecture's
    # regroup hook can read them; the plan refuses any it leaves (see convert.plan_tensors)
}


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of the checkpoint: where it lives and how to read it."""

    name: str
    shape: tuple[int, ...]  # PyTorch/numpy order (rows first)
    dtype: str  # storage type: "F32", "F16", "BF16" (F64 is read as F32) or "U8" (quantized bytes)
    file: Path
    shard_index: int  # position of its file in the shard order
    order: int  # position inside the whole checkpoint (shard order, then file order)
    _loader: Callable[[], np.ndarray] = field(repr=False, compare=False)  # returns the raw storage
    # (axis, start, length) -> that range of the raw storage, reading only it; None: cut from load_raw()
    _slice_loader: Callable[[int, int, int], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    def load_raw(self) -> np.ndarray:
        """The tensor as stored (float32, float16, or uint16 bit patterns for BF16), a fresh array."""
        return self._loader()

    def load_slice(self, axis: int, start: int, length: int) -> np.ndarray:
        """Indexes start..start+length-1 along `axis`, as stored (like load_raw), a fresh contiguous array."""
        if self._slice_loader is not None:
            return self._slice_loader(axis, start, length)
        return np.ascontiguousarray(np.take(self._loader(), range(start, start + length), axis=axis))


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Widen stored values (see SourceTensor.load_raw) to float32."""
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32, copy=False)


@dataclass
class Checkpoint:
    """config.json plus the headers of every weight tensor of a HF model folder."""

    root: Path
    config: dict[str, Any]
    tensors: dict[str, SourceTensor]
    files: list[Path]
    format: str  # "safetensors" or "pickle"

    @property
    def source_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def read_model_config(src: Path) -> dict[str, Any]:
    """config.json of the model folder `src` (read alone first: an unsupported architecture is
    named before any weight file is looked at); raise EdgeAIError naming the bad file."""
    src = Path(src)
    if not src.is_dir():
        raise EdgeAIError(f"{src} is not a folder; point to a Hugging Face model folder "
                          "(config.json, *.safetensors, tokenizer files)")
    config = read_json(src / "config.json", what="model config",
                       missing_hint="point to a Hugging Face model folder that has config.json")
    if not isinstance(config, dict):
        raise EdgeAIError(f"{src / 'config.json'} is not a JSON object; re-download the model")
    return config


def open_checkpoint(src: Path, *, allow_pickle: bool = False) -> Checkpoint:
    """Read config.json and every shard header of `src`; raise EdgeAIError naming the bad file."""
    src = Path(src)
    config = read_model_config(src)
    files, weight_map = _safetensors_files(src)
    if files:
        tensors = _index_safetensors(files)
        fmt = "safetensors"
    else:
        files, weight_map = _pickle_files(src)
        if not files:
            raise EdgeAIError(f"no weights in {src}: expected model.safetensors, model-*.safetensors "
                              f"or {SAFETENSORS_INDEX}; download the model's safetensors files")
        if not allow_pickle:
            raise EdgeAIError(f"{files[0].name} is a PyTorch pickle checkpoint, which can run code when loaded; "
                              "pass allow_pickle=True (--allow-pickle) to load it safely with "
                              "torch.load(weights_only=True), or use the model's safetensors files")
        tensors = _index_pickles(files)
        fmt = "pickle"
    if weight_map:
        _check_weight_map(src, weight_map, tensors)
    return Checkpoint(root=src, config=config, tensors=tensors, files=files, format=fmt)


def read_json(path: Path, *, what: str, missing_hint: str) -> Any:
    """Parse a JSON file or raise a one-line EdgeAIError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise EdgeAIError(f"no {path.name} in {path.parent}: {missing_hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeAIError(f"cannot read {what} {path}: {exc}; check the file") from exc
    except json.JSONDecodeError as exc:
        raise EdgeAIError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                          "re-download the file") from exc


def _safetensors_files(src: Path) -> tuple[list[Path], dict[str, str]]:
    index = src / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = _read_weight_map(index)
        return _files_named_by(src, index, weight_map), weight_map
    files = sorted(p for p in src.glob("model*.safetensors") if p.is_file())
    return files, {}


def _pickle_files(src: Path) -> tuple[list[Path], dict[str, str]]:
    index = src / PICKLE_INDEX
    if index.is_file():
        weight_map = _read_weight_map(index)
        return _files_named_by(src, index, weight_map), weight_map
    files = sorted(p for p in src.iterdir()
                   if p.is_file() and p.suffix in _PICKLE_SUFFIXES
                   and (p.name.startswith("pytorch_model") or p.name.startswith("model")
                        or p.name.startswith("consolidated")))
    return files, {}


def _read_weight_map(index: Path) -> dict[str, str]:
    data = read_json(index, what="shard index", missing_hint="re-download it")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or \
            not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise EdgeAIError(f"{index} has no valid 'weight_map'; re-download it")
    return weight_map


def _files_named_by(src: Path, index: Path, weight_map: dict[str, str]) -> list[Path]:
    names = sorted(set(weight_map.values()))
    missing = [n for n in names if not (src / n).is_file()]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        raise EdgeAIError(f"{index.name} names shard {missing[0]}{more}, which is not in {src}; "
                          "download all the model's shard files")
    return [src / n for n in names]


def _check_weight_map(src: Path, weight_map: dict[str, str], tensors: dict[str, SourceTensor]) -> None:
    """The index and the shards agree tensor by tensor: a shard that lost a tensor or an index
    from another revision would otherwise convert a model other than the one transformers loads."""
    for name, file in weight_map.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise EdgeAIError(f"tensor {name} listed in the shard index is not in {file}; "
                              "re-download that shard")
        if tensor.file != src / file:
            raise EdgeAIError(f"tensor {name} is in {tensor.file.name} but the shard index says {file}; "
                              "the index and the shards are from different downloads, re-download the model")
    extra = sorted(set(tensors) - set(weight_map))
    if extra:
        raise EdgeAIError(f"tensor {extra[0]} in {tensors[extra[0]].file.name} is missing from the shard index; "
                          "re-download the model")


# ---------------------------------------------------------------- safetensors

def _index_safetensors(files: list[Path]) -> dict[str, SourceTensor]:
    tensors: dict[str, SourceTensor] = {}
    for shard_index, path in enumerate(files):
        for name, dtype, shape, begin, end in _read_safetensors_header(path):
            if name in tensors:
                raise EdgeAIError(f"tensor {name} appears in both {tensors[name].file.name} and {path.name}; "
                                  "remove the stray shard")
            tensors[name] = SourceTensor(
                name=name, shape=shape, dtype="F32" if dtype == "F64" else dtype, file=path,
                shard_index=shard_index, order=len(tensors),
                _loader=_safetensors_loader(path, name, dtype, shape, begin, end),
                _slice_loader=_safetensors_slice_loader(path, name, dtype, shape, begin))
    return tensors


def _read_safetensors_header(path: Path) -> Iterator[tuple[str, str, tuple[int, ...], int, int]]:
    """Yield (name, dtype, shape, absolute begin, absolute end) of every tensor, validated."""
    def corrupt(why: str) -> EdgeAIError:
        return EdgeAIError(f"{path} is not a valid safetensors file ({why}); re-download it")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise corrupt("file too short")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise corrupt("header length out of range")
            raw = f.read(n)
    except OSError as exc:
        raise EdgeAIError(f"cannot read {path}: {exc.strerror}; check the file") from exc
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise corrupt("header is not JSON") from None
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    data_start = 8 + n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise corrupt(f"bad entry for tensor {name}") from None
        if dtype not in _ST_DTYPES:
            raise EdgeAIError(f"tensor {name} in {path.name} has dtype {dtype}; only F32/F16/BF16/F64 "
                              "weights (and gpt-oss's MXFP4 experts) can be converted")
        itemsize = _ST_DTYPES[dtype][1]
        if any(d < 0 for d in shape) or end - begin != math.prod(shape) * itemsize \
                or begin < 0 or data_start + end > size:
            raise corrupt(f"tensor {name} data is out of bounds or has the wrong size")
        yield name, dtype, shape, data_start + begin, data_start + end


def _safetensors_loader(path: Path, name: str, dtype: str, shape: tuple[int, ...],
                        begin: int, end: int) -> Callable[[], np.ndarray]:
    np_dtype, itemsize = _ST_DTYPES[dtype]

    def load() -> np.ndarray:
        count = (end - begin) // itemsize
        try:
            with open(path, "rb") as f:
                f.seek(begin)
                data = np.fromfile(f, dtype=np_dtype, count=count)
        except OSError as exc:
            raise EdgeAIError(f"cannot read tensor {name} from {path}: {exc.strerror}") from exc
        if data.size != count:
            raise EdgeAIError(f"{path} ends inside tensor {name}; re-download it")
        if dtype == "F64":
            data = data.astype(np.float32)
        return data.reshape(shape)

    return load


def _safetensors_slice_loader(path: Path, name: str, dtype: str, shape: tuple[int, ...],
                              begin: int) -> Callable[[int, int, int], np.ndarray]:
    np_dtype, itemsize = _ST_DTYPES[dtype]

    def load_slice(axis: int, start: int, length: int) -> np.ndarray:
        # C order: the range is one contiguous run of length x inner values per outer index
        outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
        out = np.empty((outer, length * inner), dtype=np_dtype)
        stride, skip = shape[axis] * inner * itemsize, start * inner * itemsize
        try:
            with open(path, "rb") as f:
                for i in range(outer if out.size else 0):
                    f.seek(begin + i * stride + skip)
                    if f.readinto(out[i]) != out[i].nbytes:
                        raise EdgeAIError(f"{path} ends inside tensor {name}; re-download it")
        except OSError as exc:
            raise EdgeAIError(f"cannot read tensor {name} from {path}: {exc.strerror}") from exc
        out = out.reshape(*shape[:axis], length, *shape[axis + 1:])
        return out.astype(np.float32) if dtype == "F64" else out

    return load_slice


# ---------------------------------------------------------------- pickle (opt-in)

def _index_pickles(files: list[Path]) -> dict[str, SourceTensor]:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is in the convert extra
        raise EdgeAIError("loading a PyTorch checkpoint needs torch; pip install 'edge-ai[convert]'") from exc
    tensors: dict[str, SourceTensor] = {}
    for shard_index, path in enumerate(files):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many types; the message is what matters
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EdgeAIError(f"cannot load {path.name} with torch.load(weights_only=True): {first}; "
                              "use the model's safetensors files") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise EdgeAIError(f"{path.name} does not hold a state dict of tensors; use safetensors files")
        for name, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            if name in tensors:
                raise EdgeAIError(f"tensor {name} appears in both {tensors[name].file.name} and {path.name}; "
                                  "remove the stray shard")
            if not value.is_floating_point():
                raise EdgeAIError(f"tensor {name} in {path.name} has dtype {value.dtype}; only float weights "
                                  "can be converted")
            dtype = {torch.float16: "F16", torch.bfloat16: "BF16"}.get(value.dtype, "F32")
            tensors[name] = SourceTensor(
                name=name, shape=tuple(value.shape), dtype=dtype, file=path, shard_index=shard_index,
                order=len(tensors), _loader=lambda value=value: _torch_raw(value),
                _slice_loader=lambda axis, start, length, value=value: _torch_raw(value.narrow(axis, start, length)))
    return tensors


def _torch_raw(value: Any) -> np.ndarray:
    import torch

    value = value.detach()
    if value.dtype == torch.bfloat16:
        return value.view(torch.int16).numpy().view(np.uint16).copy()
    if value.dtype not in (torch.float16, torch.float32):
        value = value.to(torch.float32)
    return value.numpy().copy()

"""Read and check GGUF model files before llama.cpp sees them.

llama.cpp (through llama-cpp-python) reports every malformed GGUF as a bare "Failed to load model",
some bad hyperparameters abort the whole process (GGML_ASSERT -> SIGABRT) and a NaN norm epsilon
aborts on the first decode. gguf-py's `GGUFReader` is no help up front: it parses every element of
the token array (seconds for a large vocabulary) and fails with raw numpy errors.

So this module has its own small reader: it walks only the header through a memory map, skips big
arrays by their lengths, bounds-checks every length and count against the file size (a corrupt file
can neither allocate huge memory nor loop for long), and turns each malformation into a one-line
`EdgeAIError`. `diagnose` then lists what would make llama.cpp fail or mis-load the model.
Only little-endian files are supported, like every GGUF published for llama.cpp.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    MODEL_ARCH_NAMES,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
    LlamaFileType,
)

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_hparams import RECONVERT, UINT32, array_length, hyperparameter_problems, type_problem

MAX_ARRAY_ITEMS = 64
"""Tokenizer arrays longer than this (token lists, scores, merges) are kept as an `ArraySummary`."""
MAX_MODEL_ARRAY_ITEMS = 65536
"""Other arrays (one value per layer: heads, widths, sliding-window flags) are read in full up to
this length: the memory planner needs every layer of a 94-layer model, not a summary."""

_MAGIC = b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, dimension count, type, offset
_MAX_TENSOR_DIMS = 4  # GGML_MAX_DIMS
_MAX_TENSOR_NAME = 63  # GGML_MAX_NAME - 1 (room for the NUL)
_MAX_ELEMENTS = 2**63 - 1  # ggml counts a tensor's values in an int64
_KNOWN_ARCHITECTURES = frozenset(MODEL_ARCH_NAMES.values())
_NO_VOCAB_TOKENIZERS = ("none", "no_vocab")
_SPECIAL_TOKEN_KEYS = (
    Keys.Tokenizer.BOS_ID,
    Keys.Tokenizer.EOS_ID,
    Keys.Tokenizer.EOT_ID,
    Keys.Tokenizer.EOM_ID,
    Keys.Tokenizer.UNK_ID,
    Keys.Tokenizer.SEP_ID,
    Keys.Tokenizer.PAD_ID,
    Keys.Tokenizer.MASK_ID,
)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALAR_FORMATS: dict[GGUFValueType, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: _U32,
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: _U64,
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}

_REPAIR = "re-download or re-convert it"


@dataclass(frozen=True)
class ArraySummary:
    """Stands in for a long metadata array so a 262k-entry vocabulary is never materialised."""

    type: str  # element type, e.g. "STRING", "FLOAT32"
    length: int


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; `shape` is in GGUF/ggml order (innermost dimension first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: str  # e.g. "Q4_K", "F32"
    offset: int  # absolute position of the data in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GGUFInfo:
    """Everything in a GGUF header. Results are cached and shared: do not mutate the dict or list."""

    path: Path
    file_size: int
    version: int
    metadata: dict[str, Any]  # long arrays (MAX_ARRAY_ITEMS, MAX_MODEL_ARRAY_ITEMS) are ArraySummary
    tensors: list[TensorInfo]
    data_offset: int
    metadata_types: dict[str, str]  # "UINT32", "STRING", "ARRAY[INT32]"...: llama.cpp checks them exactly

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get(Keys.General.ARCHITECTURE)
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str:
        value = self.metadata.get(Keys.General.NAME)
        return value if isinstance(value, str) and value else self.path.stem

    @property
    def context_length(self) -> int | None:
        return self._arch_int(Keys.LLM.CONTEXT_LENGTH)

    @property
    def block_count(self) -> int | None:
        return self._arch_int(Keys.LLM.BLOCK_COUNT)

    @property
    def embedding_length(self) -> int | None:
        return self._arch_int(Keys.LLM.EMBEDDING_LENGTH)

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get(Keys.Tokenizer.CHAT_TEMPLATE)
        return value if isinstance(value, str) else None

    @property
    def chat_templates(self) -> dict[str, str]:
        """Every template in the file, the default and the named ones (`tokenizer.chat_template.tool_use`...)
        by metadata key: llama-cpp-python compiles them all when it loads the file."""
        prefix = Keys.Tokenizer.CHAT_TEMPLATE
        return {key: value for key, value in self.metadata.items()
                if (key == prefix or key.startswith(prefix + ".")) and isinstance(value, str)}

    @property
    def alignment(self) -> int:
        return self.metadata.get(Keys.General.ALIGNMENT, GGUF_DEFAULT_ALIGNMENT)

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def tensor_type_counts(self) -> dict[str, int]:
        return dict(Counter(t.ggml_type for t in self.tensors))

    @property
    def file_type_name(self) -> str:
        """The dominant quantisation, e.g. "Q4_K_M": general.file_type, else the type holding most weights."""
        declared = _file_type_name(self.metadata.get(Keys.General.FILE_TYPE))
        if declared:
            return declared
        weights: Counter[str] = Counter()
        for tensor in self.tensors:
            weights[tensor.ggml_type] += tensor.n_elements
        return weights.most_common(1)[0][0] if weights else "unknown"

    @property
    def bits_per_weight(self) -> float:
        params = self.parameter_count
        return 8 * sum(t.nbytes for t in self.tensors) / params if params else 0.0

    def _arch_int(self, key_template: str) -> int | None:
        value = self.metadata.get(key_template.format(arch=self.architecture))
        return value if _is_int(value) else None


# --- reading -------------------------------------------------------------------------------------

_CACHE: dict[Path, tuple[tuple[int, int, int], GGUFInfo]] = {}


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse a GGUF header; cached per resolved path while its size, mtime_ns and inode are unchanged.

    The inode catches a same-size file replaced by an atomic rename within the mtime granularity.
    """
    path = Path(path).expanduser()
    st = _stat_model_file(path)
    resolved = path.resolve()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    cached = _CACHE.get(resolved)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    info = _read_file(resolved)
    _CACHE[resolved] = (stamp, info)
    return info


def _stat_model_file(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise EdgeAIError(f"no such model file: {path}") from None
    except OSError as exc:
        raise EdgeAIError(f"cannot read {path}: {exc.strerror}; check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise EdgeAIError(f"{path} is a directory, not a model file; pass the .gguf file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise EdgeAIError(f"{path} is not a regular file; pass a .gguf model file")
    return st


def _read_file(path: Path) -> GGUFInfo:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise EdgeAIError(f"{path.name} is empty (0 bytes); {_REPAIR}")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf, path)
    except OSError as exc:
        raise EdgeAIError(f"cannot read {path}: {exc.strerror}; check the file and its permissions") from None


class _Cursor:
    """A read position in the mapped file; every read is bounds-checked against the file size."""

    def __init__(self, buf: mmap.mmap, name: str) -> None:
        self.buf = buf
        self.name = name
        self.size = len(buf)
        self.pos = 0

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def error(self, problem: str) -> EdgeAIError:
        return EdgeAIError(f"{self.name}: {problem}")

    def truncated(self, what: str, end: int) -> EdgeAIError:
        return EdgeAIError(
            f"{self.name} is truncated or corrupt: {what} needs bytes up to {end} "
            f"but the file has {self.size}; {_REPAIR}"
        )

    def take(self, n: int, what: str) -> int:
        """Step over `n` bytes and return where they start."""
        start, end = self.pos, self.pos + n
        if end > self.size:
            raise self.truncated(what, end)
        self.pos = end
        return start

    def unpack(self, fmt: struct.Struct, what: str) -> Any:
        return fmt.unpack_from(self.buf, self.take(fmt.size, what))[0]

    def text(self, what: str) -> str:
        n = self.unpack(_U64, f"the length of {what}")
        start = self.take(n, what)
        try:
            return self.buf[start : start + n].decode("utf-8")
        except UnicodeDecodeError:
            # llama-cpp-python decodes metadata strictly, so invalid UTF-8 would crash it later.
            raise self.error(f"{what} is not valid UTF-8 text; {RECONVERT}") from None

    def skip_strings(self, count: int, what: str) -> None:
        """Step over `count` strings reading only their lengths (fast even for 262k tokens)."""
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        for i in range(count):
            if pos + 8 > size:
                raise self.truncated(f"item {i} of {what}", pos + 8)
            pos += 8 + unpack(buf, pos)[0]
        if pos > size:
            raise self.truncated(f"the last item of {what}", pos)
        self.pos = pos


def _parse(buf: mmap.mmap, path: Path) -> GGUFInfo:
    cur = _Cursor(buf, path.name)
    magic = buf[:4]
    if magic != _MAGIC:
        raise EdgeAIError(f"{cur.name} is not a GGUF file (starts with {magic!r}); pass a .gguf model file")
    cur.pos = len(_MAGIC)
    version = _check_version(cur, cur.unpack(_U32, "the version"))
    tensor_count = _check_count(cur, cur.unpack(_U64, "the tensor count"), _MIN_TENSOR_INFO_BYTES, "tensors")
    kv_count = _check_count(cur, cur.unpack(_U64, "the metadata count"), _MIN_KV_BYTES, "metadata entries")
    metadata, types = _read_metadata(cur, kv_count)
    alignment = _check_alignment(cur, metadata, types)
    raw_tensors = [_read_tensor_info(cur, i) for i in range(tensor_count)]
    data_offset = _align(cur.pos, alignment)
    tensors = [
        TensorInfo(name, shape, ggml_type, data_offset + relative, nbytes)
        for name, shape, ggml_type, relative, nbytes in raw_tensors
    ]
    return GGUFInfo(path, cur.size, version, metadata, tensors, data_offset, types)


def _check_version(cur: _Cursor, version: int) -> int:
    if version in _SUPPORTED_VERSIONS:
        return version
    if version == 1:
        raise cur.error(f"GGUF version 1 is no longer supported by llama.cpp; {RECONVERT}")
    if version and version & 0xFFFF == 0:  # 3 read with the wrong byte order is 0x03000000
        raise EdgeAIError(
            f"{cur.name} is a big-endian GGUF file, which is not supported; use the little-endian version of the model"
        )
    raise cur.error(f"unsupported GGUF version {version} (supported: 2, 3); the file is corrupt or too new, {_REPAIR}")


def _check_count(cur: _Cursor, count: int, min_bytes: int, what: str) -> int:
    if count * min_bytes > cur.remaining:
        raise EdgeAIError(f"{cur.name} is truncated or corrupt: the header says {count} {what}, which cannot fit "
                          f"in a {_size_text(cur.size)} file; {_REPAIR}")
    return count


def _read_metadata(cur: _Cursor, count: int) -> tuple[dict[str, Any], dict[str, str]]:
    metadata: dict[str, Any] = {}
    types: dict[str, str] = {}
    for index in range(count):
        key = cur.text(f"the name of metadata entry #{index}")
        if not key:
            raise cur.error(f"metadata entry #{index} has an empty name; {_REPAIR}")
        if key in metadata:
            raise cur.error(f"metadata key {key!r} appears twice, which llama.cpp rejects; {RECONVERT}")
        vtype = _value_type(cur, cur.unpack(_U32, f"the type of {key!r}"), key)
        if vtype is GGUFValueType.ARRAY:
            metadata[key], types[key] = _read_array(cur, key)
        else:
            metadata[key], types[key] = _read_scalar(cur, vtype, repr(key)), vtype.name
    return metadata, types


def _value_type(cur: _Cursor, type_id: int, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(type_id)
    except ValueError:
        raise cur.error(f"metadata key {key!r} has unknown value type {type_id}; {_REPAIR}") from None


def _read_scalar(cur: _Cursor, vtype: GGUFValueType, what: str) -> Any:
    if vtype is GGUFValueType.STRING:
        return cur.text(what)
    return cur.unpack(_SCALAR_FORMATS[vtype], what)


def _read_array(cur: _Cursor, key: str) -> tuple[list[Any] | ArraySummary, str]:
    elem = _value_type(cur, cur.unpack(_U32, f"the element type of {key!r}"), key)
    if elem is GGUFValueType.ARRAY:
        raise cur.error(f"metadata key {key!r} is an array of arrays, which llama.cpp cannot read; {RECONVERT}")
    length = cur.unpack(_U64, f"the length of {key!r}")
    item_size = 8 if elem is GGUFValueType.STRING else _SCALAR_FORMATS[elem].size  # strings: at least a length
    if length * item_size > cur.remaining:
        raise EdgeAIError(f"{cur.name} is truncated or corrupt: metadata key {key!r} claims {length} items, "
                          f"which cannot fit in the {cur.remaining} bytes left; {_REPAIR}")
    type_name = f"ARRAY[{elem.name}]"
    if length <= (MAX_ARRAY_ITEMS if key.startswith("tokenizer.") else MAX_MODEL_ARRAY_ITEMS):
        return [_read_scalar(cur, elem, f"item {i} of {key!r}") for i in range(length)], type_name
    if elem is GGUFValueType.STRING:
        cur.skip_strings(length, repr(key))
    else:
        cur.take(length * item_size, repr(key))
    return ArraySummary(elem.name, length), type_name


def _check_alignment(cur: _Cursor, metadata: dict[str, Any], types: dict[str, str]) -> int:
    key = Keys.General.ALIGNMENT
    if key not in metadata:
        return GGUF_DEFAULT_ALIGNMENT
    value = metadata[key]
    if types[key] != UINT32 or value == 0 or value & (value - 1):
        raise cur.error(f"{key} must be a power of two stored as UINT32, not {value!r} ({types[key]}); {RECONVERT}")
    return value


def tensor_nbytes(shape: tuple[int, ...], ggml_type: str) -> int:
    """Bytes a tensor of `shape` takes stored as ggml type `ggml_type` (e.g. "Q4_K")."""
    block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    return math.prod(shape) * type_size // block_size


def _read_tensor_info(cur: _Cursor, index: int) -> tuple[str, tuple[int, ...], str, int, int]:
    """One tensor entry: (name, shape, type name, offset relative to the data section, byte size)."""
    name = cur.text(f"the name of tensor #{index}")
    n_dims = cur.unpack(_U32, f"the dimension count of tensor {name!r}")
    if n_dims > _MAX_TENSOR_DIMS:
        raise cur.error(
            f"tensor {name!r} has {n_dims} dimensions but GGUF allows at most {_MAX_TENSOR_DIMS}; {_REPAIR}"
        )
    shape = struct.unpack_from(f"<{n_dims}Q", cur.buf, cur.take(8 * n_dims, f"the shape of tensor {name!r}"))
    type_id = cur.unpack(_U32, f"the type of tensor {name!r}")
    try:
        ggml_type = GGMLQuantizationType(type_id)
        nbytes = tensor_nbytes(shape, ggml_type.name)
    except (ValueError, KeyError):
        raise cur.error(
            f"tensor {name!r} has unknown ggml type id {type_id}; the file is corrupt or needs a newer edge-ai"
        ) from None
    relative = cur.unpack(_U64, f"the data offset of tensor {name!r}")
    return name, shape, ggml_type.name, relative, nbytes


# --- diagnosis -----------------------------------------------------------------------------------


def check_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read a model and refuse it, with the first problem, if llama.cpp would crash or mis-load it."""
    info = read_gguf(path)
    problems = diagnose(info)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise EdgeAIError(problems[0] + more)
    return info


def diagnose(info: GGUFInfo) -> list[str]:
    """Problems that would make llama.cpp fail, abort or mis-load the model; one line each, with the fix."""
    return [*_architecture_problems(info), *_tokenizer_problems(info), *_tensor_problems(info)]


def _architecture_problems(info: GGUFInfo) -> list[str]:
    name, key = info.path.name, Keys.General.ARCHITECTURE
    arch = info.metadata.get(key)
    if arch is None:
        return [f"{name} has no {key}, so llama.cpp cannot tell what model it is; {RECONVERT}"]
    if info.metadata_types[key] != "STRING":
        return [type_problem(info, key, "STRING")]
    if arch == "clip":
        return [f"{name} is a multimodal projector (mmproj), not a language model; pass the main model file"]
    if arch not in _KNOWN_ARCHITECTURES:
        return [
            f"{name}: architecture {arch!r} is not supported by this llama.cpp; "
            "use a model with a supported architecture"
        ]
    return hyperparameter_problems(info, arch)


def _tokenizer_problems(info: GGUFInfo) -> list[str]:
    name, meta = info.path.name, info.metadata
    model_key, tokens_key = Keys.Tokenizer.MODEL, Keys.Tokenizer.LIST
    if model_key not in meta:
        return [f"{name} has no tokenizer ({model_key}); {RECONVERT}, with the tokenizer files beside the weights"]
    if info.metadata_types[model_key] != "STRING":
        return [type_problem(info, model_key, "STRING")]
    if meta[model_key] in _NO_VOCAB_TOKENIZERS:
        return []
    if tokens_key not in meta:
        return [f"{name} has no vocabulary ({tokens_key}); {RECONVERT}, with the tokenizer files beside the weights"]
    if info.metadata_types[tokens_key] != "ARRAY[STRING]":
        return [type_problem(info, tokens_key, "ARRAY[STRING]")]
    n_vocab = array_length(meta[tokens_key])
    if n_vocab == 0:
        return [f"{name}: the vocabulary ({tokens_key}) is empty; {RECONVERT}"]
    problems = []
    for key in (Keys.Tokenizer.SCORES, Keys.Tokenizer.TOKEN_TYPE):
        if key in meta and array_length(meta[key]) < n_vocab:
            problems.append(f"{name}: {key} has {array_length(meta[key])} entries for {n_vocab} tokens; {RECONVERT}")
    for key in _SPECIAL_TOKEN_KEYS:
        if key not in meta:
            continue
        if info.metadata_types[key] != UINT32:
            problems.append(type_problem(info, key, UINT32))
        elif meta[key] >= n_vocab:
            problems.append(f"{name}: {key} is {meta[key]} but the vocabulary has only {n_vocab} tokens; {RECONVERT}")
    return problems


def _tensor_problems(info: GGUFInfo) -> list[str]:
    name = info.path.name
    if not info.tensors:
        return [f"{name} contains no tensors (a vocabulary-only file?); pass a full model file"]
    problems = []
    names = Counter(t.name for t in info.tensors)
    # A shard of a split model holds only some tensors; llama.cpp loads the rest from the other files.
    split_count = info.metadata.get(Keys.Split.LLM_KV_SPLIT_COUNT)
    is_shard = _is_int(split_count) and split_count > 1
    if "token_embd.weight" not in names and not is_shard:
        problems.append(f"{name} has no token_embd.weight tensor, so the model is incomplete; {RECONVERT}")
    problems += [f"{name}: tensor {n!r} appears {c} times; {RECONVERT}" for n, c in names.items() if c > 1]
    for tensor in info.tensors:
        problems += _shape_problems(name, tensor)
    return problems + _layout_problems(info)


def _shape_problems(name: str, tensor: TensorInfo) -> list[str]:
    problems = []
    if len(tensor.name) > _MAX_TENSOR_NAME:
        problems.append(f"{name}: tensor name {tensor.name!r} is longer than {_MAX_TENSOR_NAME} bytes; {RECONVERT}")
    if math.prod(tensor.shape) > _MAX_ELEMENTS:
        problems.append(
            f"{name}: tensor {tensor.name!r} has absurd dimensions {tensor.shape} (more than 2**63 values); {_REPAIR}"
        )
    if 0 in tensor.shape:
        problems.append(
            f"{name}: tensor {tensor.name!r} has shape {tensor.shape} with an empty dimension; {RECONVERT}"
        )
    block_size = GGML_QUANT_SIZES[GGMLQuantizationType[tensor.ggml_type]][0]
    if tensor.shape and tensor.shape[0] % block_size:
        problems.append(
            f"{name}: tensor {tensor.name!r} has rows of {tensor.shape[0]} values, not a multiple of the "
            f"{tensor.ggml_type} block size {block_size}; {RECONVERT}"
        )
    return problems


def _layout_problems(info: GGUFInfo) -> list[str]:
    """Truncation first (the common case), then the contiguous, aligned layout llama.cpp insists on."""
    name = info.path.name
    for tensor in info.tensors:
        end = tensor.offset + tensor.nbytes
        if end > info.file_size:
            return [
                f"{name} is truncated: tensor {tensor.name!r} needs bytes up to {end} "
                f"but the file has {info.file_size}; {_REPAIR}"
            ]
    expected = 0
    for tensor in info.tensors:
        relative = tensor.offset - info.data_offset
        if relative != expected:
            return [
                f"{name}: tensor {tensor.name!r} starts at data offset {relative} but llama.cpp expects {expected} "
                f"(tensors stored in order, {info.alignment}-byte aligned); {RECONVERT}"
            ]
        expected += _align(tensor.nbytes, info.alignment)
    return []


# --- helpers -------------------------------------------------------------------------------------


def _file_type_name(file_type: Any) -> str | None:
    """LlamaFileType.MOSTLY_Q4_K_M -> "Q4_K_M"; None if missing, unknown or GUESSED."""
    if not _is_int(file_type):
        return None
    try:
        member = LlamaFileType(file_type)
    except ValueError:
        return None
    if member is LlamaFileType.GUESSED:
        return None
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def _size_text(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1_000_000 else f"{n_bytes}-byte"

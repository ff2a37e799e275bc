"""llama_model_quantize with its parameter structs filled from plain Python values.

The call reports progress, planned types and its failure reason only in llama.cpp's log, so the
log is diverted to the caller's `on_log(level, text)` for its duration (`log.diverted`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from runtime.llamacpp import log as llama_log
from runtime.llamacpp.load import ensure_loads

GGML_TYPE_COUNT: int = llama_cpp.GGML_TYPE_COUNT  # ggml types this build knows are below this
# The load check's parameters: llama_model_quantize reads the file with llama.cpp's model loader,
# whose asserts abort like a load's, so the file is loaded once in a child first (small context).
_CHECK_PARAMS = {"n_ctx": 256, "n_batch": 64, "n_ubatch": 64, "n_threads": 1, "n_threads_batch": 1}


def ftype(name: str) -> int | None:
    """llama_ftype `LLAMA_FTYPE_<name>` (e.g. "MOSTLY_Q4_K_M"), None when this build lacks it."""
    return getattr(llama_cpp, f"LLAMA_FTYPE_{name}", None)


def quantize_model(src: Path, dst: Path | None, *, ftype: int, threads: int, allow_requantize: bool, pure: bool,
                   output_type: int | None, embedding_type: int | None, overrides: Sequence[tuple[str, int]],
                   imatrix: Mapping[str, np.ndarray], metadata: Sequence[tuple[str, str | int]],
                   on_log: Callable[[int, str], None]) -> tuple[int, BaseException | None]:
    """Quantize `src` to `dst`, or plan it (llama.cpp's dry run) when `dst` is None.

    `overrides` are (tensor-name regex, ggml type) pairs, `imatrix` the importance values per
    tensor (float32, contiguous), `metadata` key/value pairs written into the output. Returns
    llama.cpp's status (0: done) and the first exception `on_log` raised, if any. A file llama.cpp
    cannot load is refused first, in one line (`ModelLoadError`).
    """
    ensure_loads(src, _CHECK_PARAMS)
    keep: list[Any] = []  # every ctypes buffer must outlive the call
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    params.pure = pure
    params.dry_run = dst is None
    if output_type is not None:
        params.output_tensor_type = output_type
    if embedding_type is not None:
        params.token_embedding_type = embedding_type
    if overrides:
        array = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for slot, (pattern, type_id) in zip(array, overrides):
            slot.pattern = pattern.encode()
            slot.type = type_id
        array[len(overrides)].pattern = None
        array[len(overrides)].type = llama_cpp.GGML_TYPE_COUNT
        keep.append(array)
        params.tt_overrides = ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    if imatrix:
        array = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for slot, (name, values) in zip(array, imatrix.items()):
            slot.name = name.encode()
            slot.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            slot.size = values.size
        array[len(imatrix)].name = None
        keep.append(array)
        params.imatrix = ctypes.cast(array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    if metadata:
        kv = _kv_overrides(metadata)
        keep.append(kv)
        params.kv_overrides = ctypes.cast(kv, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    with llama_log.diverted(on_log) as diversion:
        status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode() if dst else b"",
                                                ctypes.byref(params))
    del keep
    return status, diversion.error


def _kv_overrides(values: Sequence[tuple[str, str | int]]) -> ctypes.Array:
    """A terminated llama_model_kv_override array (keys and strings cut to llama.cpp's 127 bytes)."""
    array = (llama_cpp.llama_model_kv_override * (len(values) + 1))()
    for slot, (key, value) in zip(array, values):
        slot.key = key.encode()[:127]
        if isinstance(value, int):
            slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            slot.value.val_i64 = value
        else:
            slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            slot.value.val_str = value.encode()[:127]
    array[len(values)].key = b""
    return array

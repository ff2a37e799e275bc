"""A read-only ctypes view of ggml's `struct ggml_tensor`, for llama.cpp's eval callback.

llama-cpp-python exposes `cb_eval` (called for every graph node, with a `struct ggml_tensor *`) but
no way to look inside the tensor. This module mirrors the struct from ggml.h:

    struct ggml_tensor {
        enum ggml_type type;                       //   0
        struct ggml_backend_buffer * buffer;       //   8
        int64_t ne[GGML_MAX_DIMS];                 //  16  elements per dimension (innermost first)
        size_t  nb[GGML_MAX_DIMS];                 //  48  strides in bytes
        enum ggml_op op;                           //  80
        int32_t op_params[GGML_MAX_OP_PARAMS / 4]; //  84
        int32_t flags;                             // 148
        struct ggml_tensor * src[GGML_MAX_SRC];    // 152
        struct ggml_tensor * view_src;             // 232
        size_t view_offs;                          // 240
        void * data;                               // 248
        char name[GGML_MAX_NAME];                  // 256
        void * extra;                              // 320
        char padding[8];                           // 328 -> sizeof 336
    };

A mismatched layout would read garbage, so `verify_layout()` checks the mirror against the loaded
libggml-base before first use: `ggml_tensor_overhead()` (object header + struct size), and a real
MUL_MAT_ID node built with ggml itself whose fields are compared against ggml's own accessors
(`ggml_get_name`, `ggml_get_data`, `ggml_nbytes`, `ggml_nelements`, op ids, source pointers).
Op ids are looked up by name through `ggml_op_name`, never hard-coded.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pathlib
from typing import Any

import numpy as np

GGML_MAX_DIMS = 4
GGML_MAX_OP_PARAMS = 64
GGML_MAX_SRC = 10
GGML_MAX_NAME = 64
_OBJECT_SIZE = 32  # struct ggml_object: offs, size, next, type (+4 padding)

GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_I8 = 24
GGML_TYPE_I16 = 25
GGML_TYPE_I32 = 26
GGML_TYPE_I64 = 27
GGML_TYPE_F64 = 28

_NUMPY_TYPES = {
    GGML_TYPE_F32: np.float32, GGML_TYPE_F16: np.float16, GGML_TYPE_I8: np.int8, GGML_TYPE_I16: np.int16,
    GGML_TYPE_I32: np.int32, GGML_TYPE_I64: np.int64, GGML_TYPE_F64: np.float64,
}


class GGMLTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """ggml order: ne[0] (innermost, row length) first."""
        return tuple(self.ne)  # type: ignore[return-value]

    @property
    def tensor_name(self) -> str:
        return self.name.decode("utf-8", errors="replace")


class LayoutError(RuntimeError):
    """This build's ggml does not match the mirrored struct; reading tensors would be unsafe."""


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


@functools.cache
def lib() -> ctypes.CDLL:
    """libggml-base from llama-cpp-python's own lib dir (dlopen returns the instance libllama uses)."""
    base = _already_loaded_ggml_base()
    vp, sz, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "ggml_op_name": (ctypes.c_char_p, [ctypes.c_int]),
        "ggml_type_name": (ctypes.c_char_p, [ctypes.c_int]),
        "ggml_get_name": (vp, [vp]),
        "ggml_set_name": (vp, [vp, ctypes.c_char_p]),
        "ggml_get_data": (vp, [vp]),
        "ggml_nbytes": (sz, [vp]),
        "ggml_nelements": (i64, [vp]),
        "ggml_tensor_overhead": (sz, []),
        "ggml_backend_buffer_is_host": (ctypes.c_bool, [vp]),
        "ggml_backend_tensor_get": (None, [vp, vp, sz, sz]),
        "ggml_init": (vp, [_InitParams]),
        "ggml_free": (None, [vp]),
        "ggml_new_tensor_2d": (vp, [vp, ctypes.c_int, i64, i64]),
        "ggml_new_tensor_3d": (vp, [vp, ctypes.c_int, i64, i64, i64]),
        "ggml_mul_mat": (vp, [vp, vp, vp]),
        "ggml_mul_mat_id": (vp, [vp, vp, vp, vp]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(base, name)
        fn.restype, fn.argtypes = restype, argtypes
    return base


def _already_loaded_ggml_base() -> ctypes.CDLL:
    """The libggml-base instance libllama already uses.

    The wheel ships libggml-base.so and libggml-base.so.0 as separate files (not symlinks), so
    opening the first by path would map a second copy. Opening the bare file names with RTLD_NOLOAD
    finds the one the dynamic linker loaded for libllama (matched by soname) without loading more.
    """
    import llama_cpp  # loads libllama and, through it, libggml-base
    from llama_cpp._ctypes_extensions import load_shared_library

    lib_dir = pathlib.Path(llama_cpp.__file__).parent / "lib"
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is not None:
        for candidate in sorted(lib_dir.glob("libggml-base.*"), key=lambda p: -len(p.name)):
            try:
                return ctypes.CDLL(candidate.name, mode=no_load)
            except OSError:
                continue
    return load_shared_library("ggml-base", lib_dir)


@functools.cache
def op_id(name: str) -> int:
    """The enum ggml_op value whose `ggml_op_name` is `name` (e.g. "MUL_MAT").

    ggml_op_name does not bounds-check, so the scan stops at the first match and looks at most at
    the first 64 of ggml's ~100 ops (MUL_MAT / MUL_MAT_ID are 29 / 30 in this build).
    """
    for i in range(64):
        found = lib().ggml_op_name(i)
        if found is not None and found.decode() == name:
            return i
    raise LayoutError(f"ggml has no op named {name!r} among its first 64 ops")


def tensor_at(address: int) -> GGMLTensor:
    """A view (no copy) of the struct at `address`; valid only while ggml keeps the tensor alive."""
    return GGMLTensor.from_address(address)


def to_numpy(address: int) -> np.ndarray:
    """A copy of the tensor's data as a numpy array in numpy order (ne[3], ne[2], ne[1], ne[0]).

    Strided (non-contiguous) views are honoured through nb. Host buffers are read in place; others
    are first copied with ggml_backend_tensor_get, exactly as llama-imatrix does.
    """
    t = tensor_at(address)
    dtype = _NUMPY_TYPES.get(t.type)
    if dtype is None:
        raise LayoutError(f"cannot read ggml type {lib().ggml_type_name(t.type)!r} of tensor {t.tensor_name!r}")
    if not t.buffer or not t.data:
        raise LayoutError(f"tensor {t.tensor_name!r} has no data")
    nbytes = lib().ggml_nbytes(address)
    if lib().ggml_backend_buffer_is_host(t.buffer):
        raw = (ctypes.c_char * nbytes).from_address(t.data)
    else:
        raw = (ctypes.c_char * nbytes)()
        lib().ggml_backend_tensor_get(address, ctypes.addressof(raw), 0, nbytes)
    view = np.ndarray(shape=tuple(reversed(t.shape)), dtype=dtype, buffer=raw,
                      strides=tuple(reversed(list(t.nb))))
    return np.array(view, copy=True)


@functools.cache
def verify_layout() -> None:
    """Raise LayoutError unless the mirrored struct matches this build of ggml (checked once)."""
    g = lib()
    expected = ctypes.sizeof(GGMLTensor)
    if g.ggml_tensor_overhead() != _OBJECT_SIZE + expected:
        raise LayoutError(
            f"ggml_tensor_overhead() is {g.ggml_tensor_overhead()}, expected {_OBJECT_SIZE + expected} "
            "for the mirrored struct ggml_tensor"
        )
    mul_mat, mul_mat_id = op_id("MUL_MAT"), op_id("MUL_MAT_ID")
    ctx = g.ggml_init(_InitParams(1 << 16, None, False))
    if not ctx:
        raise LayoutError("ggml_init failed")
    try:
        w = g.ggml_new_tensor_3d(ctx, GGML_TYPE_F32, 7, 5, 4)
        g.ggml_set_name(w, b"blk.0.ffn_up_exps.weight")
        x = g.ggml_new_tensor_3d(ctx, GGML_TYPE_F32, 7, 2, 3)
        ids = g.ggml_new_tensor_2d(ctx, GGML_TYPE_I32, 2, 3)
        out = g.ggml_mul_mat_id(ctx, w, x, ids)
        a, b = g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 7, 6), g.ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 7, 3)
        dense = g.ggml_mul_mat(ctx, a, b)
        tw, tx, tout, tdense = tensor_at(w), tensor_at(x), tensor_at(out), tensor_at(dense)
        checks = {
            "name": ctypes.addressof(tw) + GGMLTensor.name.offset == g.ggml_get_name(w)
            and tw.tensor_name == "blk.0.ffn_up_exps.weight",
            "data": tw.data == g.ggml_get_data(w),
            "type": (tw.type, tensor_at(ids).type) == (GGML_TYPE_F32, GGML_TYPE_I32),
            "ne": tw.shape == (7, 5, 4, 1) and tout.shape == (5, 2, 3, 1),
            "nb": tuple(tw.nb) == (4, 28, 140, 560) and g.ggml_nbytes(w) == 560,
            "nelements": g.ggml_nelements(out) == 30,
            "op": tout.op == mul_mat_id and tdense.op == mul_mat and tw.op == 0,
            "src": tuple(tout.src[:3]) == (w, x, ids) and tout.src[3] is None,
            "view": tout.view_src is None and tout.view_offs == 0,
            "x": tx.shape == (7, 2, 3, 1),
        }
    finally:
        g.ggml_free(ctx)
    wrong = [name for name, ok in checks.items() if not ok]
    if wrong:
        raise LayoutError(f"struct ggml_tensor layout mismatch in fields {wrong}; "
                          "this llama-cpp-python build is not supported")

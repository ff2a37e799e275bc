"""Tensor buffer-type overrides for llama-cpp-python, which has no `override_tensor` parameter.

llama.cpp's `llama_model_params.tensor_buft_overrides` is a NULL-terminated array of
{regex, buffer type}: every weight whose name matches is allocated in that buffer type instead of
its layer's device (llama.cpp's `-ot` / `--cpu-moe`). llama-cpp-python declares the field as a raw
pointer and never sets it, so we build the array with ctypes and put it on the params `Llama`
takes from `llama_model_default_params()`, for the duration of one `Llama(...)` call.

Why through llama_cpp's own library handle: the buffer types must come from the ggml libllama
actually loaded. Opening libggml-base.so a second time gives a second ggml whose CPU buffer type
is not the one the CPU backend knows, and llama.cpp silently stops repacking those weights.
llama.cpp matches patterns anywhere in a name (std::regex_search), so callers anchor them with `$`.
The array, the pattern bytes and the buffer-type pointers must outlive the model load: `applied`
holds them until the model is built (llama.cpp copies what it keeps).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import threading
from collections.abc import Iterator, Sequence

import llama_cpp
import llama_cpp.llama_cpp as llama_lib

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import GGUFInfo

GGML_BACKEND_DEVICE_TYPE_CPU = 0  # enum ggml_backend_dev_type
_patch_lock = threading.Lock()  # one Llama(...) at a time may see patched default params


class BuftOverride(ctypes.Structure):
    """struct llama_model_tensor_buft_override { const char * pattern; ggml_backend_buffer_type_t buft; }"""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _function(name: str, restype: object, argtypes: list[object]) -> ctypes._CFuncPtr:
    fn = getattr(llama_lib._lib, name)  # dlsym on libllama's handle also finds its ggml's symbols
    fn.restype, fn.argtypes = restype, argtypes
    return fn


def buffer_type(device: str) -> int:
    """The ggml buffer type of `device` ("CPU", or a backend device name such as "CUDA0")."""
    if device.upper() == "CPU":
        dev = _function("ggml_backend_dev_by_type", ctypes.c_void_p, [ctypes.c_int])(GGML_BACKEND_DEVICE_TYPE_CPU)
    else:
        dev = _function("ggml_backend_dev_by_name", ctypes.c_void_p, [ctypes.c_char_p])(device.encode())
    if not dev:
        raise EdgeAIError(f"this llama.cpp build has no device {device!r}; use CPU or a device it lists at load")
    buft = _function("ggml_backend_dev_buffer_type", ctypes.c_void_p, [ctypes.c_void_p])(dev)
    if not buft:
        raise EdgeAIError(f"llama.cpp device {device!r} has no buffer type")
    return buft


def check_patterns(info: GGUFInfo, overrides: Sequence[tuple[str, str]]) -> None:
    """Refuse a pattern that is not a regex or matches none of the model's tensors (a typo would
    otherwise load the model with nothing moved and no word said)."""
    names = [t.name for t in info.tensors]
    for pattern, _ in overrides:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise EdgeAIError(f"tensor override {pattern!r} is not a regular expression ({exc})") from None
        if not any(regex.search(name) for name in names):
            raise EdgeAIError(f"tensor override {pattern!r} matches no tensor of {info.path.name}; "
                              "list the names with `edge-ai models info`")


class Overrides:
    """The NULL-terminated override array and the memory it points to."""

    def __init__(self, overrides: Sequence[tuple[str, str]]) -> None:
        self.patterns = [pattern.encode() for pattern, _ in overrides]
        self.array = (BuftOverride * (len(overrides) + 1))()  # the last entry stays {NULL, NULL}
        for entry, pattern, (_, device) in zip(self.array, self.patterns, overrides, strict=False):
            entry.pattern = pattern
            entry.buft = buffer_type(device)

    @property
    def address(self) -> int:
        return ctypes.addressof(self.array)


@contextlib.contextmanager
def applied(info: GGUFInfo, overrides: Sequence[tuple[str, str]]) -> Iterator[Overrides | None]:
    """Within the block, `llama_cpp.Llama(...)` loads `info`'s model with `overrides` ((regex, device) pairs)."""
    if not overrides:
        yield None
        return
    check_patterns(info, overrides)
    table = Overrides(overrides)
    original = llama_lib.llama_model_default_params

    def with_overrides() -> llama_cpp.llama_model_params:
        params = original()
        params.tensor_buft_overrides = table.address
        return params

    with _patch_lock:
        llama_lib.llama_model_default_params = with_overrides
        try:
            yield table
        finally:
            llama_lib.llama_model_default_params = original


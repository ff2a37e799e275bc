"""What the llama.cpp build in this process can do, for `edge-ai doctor` and the planner."""

from __future__ import annotations

import ctypes

import llama_cpp

from runtime.llamacpp.overrides import lib_function

GPU_DEVICE_TYPES = (1, 2)  # enum ggml_backend_dev_type: GPU, IGPU


def build() -> tuple[str, bool]:
    """(llama.cpp's system info line: backends and CPU features it was built with, GPU offload support).

    GPU offload means a GPU or integrated-GPU device here: llama_supports_gpu_offload() also says yes
    for a build with the RPC backend, whose devices are other machines' (`--rpc`), not this one's."""
    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    if not llama_cpp.llama_supports_gpu_offload():  # also loads dynamically built backends, before the lookup
        return info, False
    by_type = lib_function("ggml_backend_dev_by_type", ctypes.c_void_p, [ctypes.c_int])
    return info, any(by_type(kind) for kind in GPU_DEVICE_TYPES)

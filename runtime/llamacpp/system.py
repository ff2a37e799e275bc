"""What the llama.cpp build in this process can do, for `edge-ai doctor`."""

from __future__ import annotations

import llama_cpp


def build() -> tuple[str, bool]:
    """(llama.cpp's system info line: backends and CPU features it was built with, GPU offload support)."""
    return llama_cpp.llama_print_system_info().decode(errors="replace").strip(), bool(llama_cpp.llama_supports_gpu_offload())

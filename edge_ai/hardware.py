"""What this machine can do: CPU features, memory, llama.cpp backends, audio, display.

Used by `edge-ai doctor`, and by the engine for defaults (threads); what a model needs against the
free RAM is edge_ai.memory's job.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import psutil

GIB = 1024**3


def default_threads() -> int:
    """Physical cores: llama.cpp decode is memory-bound and hyperthreads only add contention."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def _cpuinfo_field(*keys: str) -> str | None:
    """The first /proc/cpuinfo value under one of `keys` (None off Linux or when absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """CPU feature flags (x86 'flags', ARM 'Features'); empty where /proc/cpuinfo has none."""
    return set((_cpuinfo_field("flags", "Features") or "").split())


@dataclass(frozen=True)
class HardwareReport:
    cpu_model: str
    physical_cores: int
    logical_cores: int
    simd: tuple[str, ...]
    ram_total: int
    ram_available: int
    llama_backends: str
    gpu_offload: bool
    display: str | None
    audio: str


SIMD_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
              "neon", "asimd", "sve", "sve2", "dotprod")


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _audio_summary() -> str:
    """Audio devices through sounddevice when the voice extra is installed."""
    try:
        import sounddevice  # noqa: PLC0415 - optional extra, probed only by doctor
    except (ImportError, OSError) as exc:
        return f"unavailable ({exc}); install the voice extra and libportaudio2"
    try:
        devices = sounddevice.query_devices()
    except Exception as exc:  # PortAudio errors have no common base class
        return f"no devices ({exc})"
    inputs = sum(1 for d in devices if d["max_input_channels"] > 0)
    outputs = sum(1 for d in devices if d["max_output_channels"] > 0)
    return f"{inputs} input and {outputs} output devices"


def probe(llama_backends: str, gpu_offload: bool) -> HardwareReport:
    """Collect the report (a fraction of a second; no model is loaded).

    What the llama.cpp build can do comes from the caller (`runtime.llamacpp.system.build()`):
    this core module knows nothing of llama-cpp-python.
    """
    flags = cpu_flags()
    memory = psutil.virtual_memory()
    display = os.environ.get("WAYLAND_DISPLAY") or os.environ.get("DISPLAY")
    return HardwareReport(
        cpu_model=_cpu_model(),
        physical_cores=psutil.cpu_count(logical=False) or 0,
        logical_cores=psutil.cpu_count(logical=True) or 0,
        simd=tuple(f for f in SIMD_FLAGS if f in flags),
        ram_total=memory.total,
        ram_available=memory.available,
        llama_backends=llama_backends,
        gpu_offload=gpu_offload,
        display=display,
        audio=_audio_summary(),
    )

"""Hugging Face safetensors checkpoint -> GGUF, one small module per architecture family.

    from convert.gguf import convert_checkpoint
    report = convert_checkpoint(Path("hf-model-dir"), Path("model.gguf"), outtype="q8_0")

See registry.py for how an architecture module is written, and archs/ for the families.
"""

from convert.gguf import archs as _archs  # noqa: F401  (registers every family)
from convert.gguf.convert import ConversionReport, convert_checkpoint, plan_tensors
from convert.gguf.registry import (
    Architecture,
    find_architecture,
    register,
    supported_architectures,
)
from convert.gguf.tensors import OUTTYPES

SUPPORTED_ARCHITECTURES: tuple[str, ...] = supported_architectures()
"""config.json `architectures` names this converter handles (computed when the package is imported)."""

__all__ = [
    "OUTTYPES",
    "SUPPORTED_ARCHITECTURES",
    "Architecture",
    "ConversionReport",
    "convert_checkpoint",
    "find_architecture",
    "plan_tensors",
    "register",
    "supported_architectures",
]

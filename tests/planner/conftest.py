"""Fixtures for the planner: tiny random MoE checkpoints converted by our converter, once per session."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "convert"))

N_CTX_TRAIN = 4096  # long enough that the attention phase, not the logits, sizes the compute buffer


@pytest.fixture(scope="session")
def tiny_moe_build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Path]]:
    """tiny_moe_build(arch) -> (the tiny random HF checkpoint, its f32 GGUF), built once per session."""
    from tiny_hf_more import build_more

    from convert.gguf import convert_checkpoint

    cache: dict[str, tuple[Any, Path]] = {}

    def get(arch: str) -> tuple[Any, Path]:
        if arch not in cache:
            root = tmp_path_factory.mktemp(f"moe-{arch}")
            checkpoint = build_more(arch, root / arch, max_position_embeddings=N_CTX_TRAIN)
            gguf = convert_checkpoint(checkpoint.path, root / f"{arch}-f32.gguf", outtype="f32").output
            cache[arch] = (checkpoint, gguf)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def tiny_moe(tiny_moe_build: Callable[[str], tuple[Any, Path]]) -> Callable[[str], Path]:
    """tiny_moe(arch) -> the f32 GGUF of a tiny random qwen2moe / qwen3moe / mixtral checkpoint."""
    return lambda arch: tiny_moe_build(arch)[1]

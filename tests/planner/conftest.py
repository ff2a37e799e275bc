"""Fixtures for the planner: tiny random MoE checkpoints converted by our converter, once per session."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "convert"))

N_CTX_TRAIN = 4096  # long enough that the attention phase, not the logits, sizes the compute buffer


@pytest.fixture(scope="session")
def tiny_moe(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """tiny_moe(arch) -> the f32 GGUF of a tiny random qwen2moe / qwen3moe / mixtral checkpoint."""
    from tiny_hf_more import build_more

    from convert.gguf import convert_checkpoint

    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            root = tmp_path_factory.mktemp(f"moe-{arch}")
            checkpoint = build_more(arch, root / arch, max_position_embeddings=N_CTX_TRAIN)
            cache[arch] = convert_checkpoint(checkpoint.path, root / f"{arch}-f32.gguf", outtype="f32").output
        return cache[arch]

    return get

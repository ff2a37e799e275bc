"""Fixtures for converter tests: tiny checkpoints built once per session, converted, loaded once."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_hf import TinyCheckpoint, build_checkpoint, load_llama  # noqa: E402


@dataclass
class Converted:
    checkpoint: TinyCheckpoint
    gguf: Path
    report: Any
    llm: Any  # llama_cpp.Llama with all logits and an F32 KV cache


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., TinyCheckpoint]:
    """tiny_checkpoint(arch, tokenizer_kind=None) -> a checkpoint built once per session (do not modify it)."""
    cache: dict[tuple[str, str | None], TinyCheckpoint] = {}

    def get(arch: str, tokenizer_kind: str | None = None) -> TinyCheckpoint:
        key = (arch, tokenizer_kind)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"hf-{arch}-{tokenizer_kind or 'default'}")
            cache[key] = build_checkpoint(arch, root / arch, tokenizer_kind=tokenizer_kind)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def converted(tiny_checkpoint: Callable[..., TinyCheckpoint],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Converted]]:
    """converted(arch, tokenizer_kind=None) -> the f32 GGUF of that checkpoint, loaded in llama.cpp once."""
    from convert.gguf import convert_checkpoint

    cache: dict[tuple[str, str | None], Converted] = {}

    def get(arch: str, tokenizer_kind: str | None = None) -> Converted:
        key = (arch, tokenizer_kind)
        if key not in cache:
            checkpoint = tiny_checkpoint(arch, tokenizer_kind)
            out = tmp_path_factory.mktemp(f"gguf-{arch}") / f"{arch}-f32.gguf"
            report = convert_checkpoint(checkpoint.path, out, outtype="f32")
            cache[key] = Converted(checkpoint, out, report, load_llama(out))
        return cache[key]

    yield get
    for item in cache.values():
        item.llm.close()


@pytest.fixture(scope="session")
def converted_more(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Converted]]:
    """converted_more(arch) -> like `converted`, for the gemma and MoE checkpoints of tiny_hf_more."""
    from tiny_hf_more import build_more

    from convert.gguf import convert_checkpoint

    cache: dict[str, Converted] = {}

    def get(arch: str) -> Converted:
        if arch not in cache:
            root = tmp_path_factory.mktemp(arch)
            checkpoint = build_more(arch, root / arch)
            report = convert_checkpoint(checkpoint.path, root / f"{arch}-f32.gguf", outtype="f32")
            cache[arch] = Converted(checkpoint, report.output, report, load_llama(report.output))
        return cache[arch]

    yield get
    for item in cache.values():
        item.llm.close()


@pytest.fixture
def checkpoint_copy(tiny_checkpoint: Callable[..., TinyCheckpoint], tmp_path: Path) -> Callable[..., Path]:
    """checkpoint_copy(arch) -> a private copy of the session checkpoint folder, free to break."""
    def copy(arch: str = "qwen2", tokenizer_kind: str | None = None) -> Path:
        target = tmp_path / f"src-{arch}"
        shutil.copytree(tiny_checkpoint(arch, tokenizer_kind).path, target)
        return target
    return copy

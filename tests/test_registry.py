"""Model registry: paths, user-added names, packaged models assembled on first use; RAM check."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_ai import registry
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf
from edge_ai.kv_cache import kv_cache_bytes
from edge_ai.memory import check_fits_in_ram
from edge_ai.paths import get_paths


def test_packaged_model_is_assembled_once_with_progress() -> None:
    calls: list[tuple[int, int]] = []
    path = registry.resolve("gemma3-270m", progress=lambda done, total: calls.append((done, total)))
    assert path == get_paths().models_dir / "gemma-3-270m-q4_k_m.gguf"
    assert calls and calls[-1][0] == calls[-1][1] == path.stat().st_size
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    again: list[tuple[int, int]] = []
    assert registry.resolve("gemma3-270m", progress=lambda d, t: again.append((d, t))) == path
    assert again == []
    entry = {e.name: e for e in registry.list_models()}["gemma3-270m"]
    assert entry.available and entry.source == "package"


def test_user_models_by_name_and_path(model_path: Path) -> None:
    assert registry.resolve(str(model_path)) == model_path.resolve()
    entry = registry.add(model_path, name="mine")
    assert entry.name == "mine" and registry.resolve("mine") == model_path.absolute()
    assert "mine" in registry.known_names()
    registry.remove("mine")
    assert "mine" not in registry.known_names()
    assert model_path.exists(), "removing a user model never deletes the user's file"


def test_registry_errors(tmp_path: Path, model_path: Path) -> None:
    with pytest.raises(EdgeAIError, match="unknown model 'nope'.*known: gemma3-270m"):
        registry.resolve("nope")
    with pytest.raises(EdgeAIError, match="built-in model name"):
        registry.add(model_path, name="gemma3-270m")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(EdgeAIError, match="bad.gguf"):
        registry.add(bad)
    assert "bad" not in registry.known_names()
    moved = tmp_path / "moved.gguf"
    moved.symlink_to(model_path)
    registry.add(moved, name="moved")
    moved.unlink()
    with pytest.raises(EdgeAIError, match="no longer exists"):
        registry.resolve("moved")


def test_a_taken_name_is_not_silently_repointed(tmp_path: Path, model_path: Path) -> None:
    first, second = tmp_path / "first.gguf", tmp_path / "second.gguf"
    first.symlink_to(model_path)
    second.symlink_to(model_path)
    registry.add(first, name="mine")
    registry.add(first, name="mine")  # the same file again is fine
    with pytest.raises(EdgeAIError, match="already registered for .*first.gguf.*--replace"):
        registry.add(second, name="mine")
    assert registry.resolve("mine") == first.absolute()
    registry.add(second, name="mine", replace=True)
    assert registry.resolve("mine") == second.absolute()


@pytest.mark.parametrize("text", ['[models]\nx = "a.gguf"\n', '[models.x]\nfile = "a.gguf"\n', 'models = 3\n'])
def test_a_malformed_model_list_is_one_clear_error(text: str) -> None:
    models_file = get_paths().models_file
    models_file.parent.mkdir(parents=True, exist_ok=True)
    models_file.write_text(text)
    with pytest.raises(EdgeAIError, match="malformed entries.*fix or delete"):
        registry.list_models()


def test_model_too_big_for_ram_is_refused_with_the_numbers(model_path: Path) -> None:
    info = read_gguf(model_path)
    # full-size sliding-window caches: layers x ctx x kv heads x dims x f16
    assert kv_cache_bytes(info, 4096, swa_full=True) == 18 * 4096 * 1 * (256 + 256) * 2
    with pytest.raises(EdgeAIError, match="needs about .* GiB .* only 0.2 GiB of RAM is free"):
        check_fits_in_ram(info, 4096, available=200 * 1024**2)  # a dense model: the whole file must fit
    check_fits_in_ram(info, 4096)

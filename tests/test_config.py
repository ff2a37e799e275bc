"""Configuration: file < environment < flags, validation naming the key, atomic `set`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_ai import config
from edge_ai.errors import EdgeAIError
from edge_ai.paths import get_paths


def test_defaults_when_nothing_is_set() -> None:
    cfg = config.load()
    assert cfg.model.name == "gemma3-270m" and cfg.server.host == "127.0.0.1"
    assert cfg.get("sampling.temperature") == config.SamplingSettings().temperature


def test_layering_file_then_env_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    config.set_value("sampling.temperature", "0.2")
    config.set_value("sampling.top_k", "10")
    config.set_value("sampling.stop", "###,END")
    monkeypatch.setenv("EDGE_AI_SAMPLING_TOP_K", "20")
    cfg = config.load({"sampling.top_k": 30})
    assert cfg.sampling.temperature == 0.2 and cfg.sampling.stop == ["###", "END"]
    assert cfg.sampling.top_k == 30
    assert config.load().sampling.top_k == 20


def test_set_writes_valid_toml_atomically() -> None:
    config.set_value("model.swa_full", "yes")
    config.set_value("chat.system_prompt", 'Say "hi"\nthen stop')
    path = get_paths().config_file
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]  # no temp files left
    cfg = config.load()
    assert cfg.model.swa_full is True and cfg.chat.system_prompt == 'Say "hi"\nthen stop'


@pytest.mark.parametrize("key, value, message", [
    ("sampling.temperature", "hot", "'sampling.temperature'.*not a valid float"),
    ("sampling.top_p", "1.5", "'sampling.top_p'.*out of range"),
    ("server.port", "70000", "'server.port'.*out of range"),
    ("model.context", "2.5", "'model.context'.*not a valid int"),
    ("sampling.temprature", "1", "unknown setting 'sampling.temprature'"),
    ("sampling.temperature", "nan", "not a valid float"),
    ("model.rpc", "10.0.0.2", "'model.rpc'.*'10.0.0.2' is not host:port"),
    ("model.rpc", "[::1]:50052,a:1", "'model.rpc'.*'\\[::1\\]:50052' is not host:port"),
    ("model.rpc", "a:50052,a:50052", "'model.rpc'.*listed twice"),
])
def test_invalid_values_name_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(EdgeAIError, match=message):
        config.set_value(key, value)
    assert not get_paths().config_file.exists()


def test_rpc_servers_are_stored_trimmed_and_can_be_cleared() -> None:
    assert config.set_value("model.rpc", " 10.0.0.2:50052, box:50053") == ["10.0.0.2:50052", "box:50053"]
    assert config.load().model.rpc == ["10.0.0.2:50052", "box:50053"]
    assert config.set_value("model.rpc", "") == []


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AI_MODEL_THREADS", "many")
    with pytest.raises(EdgeAIError, match="EDGE_AI_MODEL_THREADS"):
        config.load()


def test_broken_config_file_is_reported_with_its_path() -> None:
    path: Path = get_paths().config_file
    path.parent.mkdir(parents=True)
    path.write_text("[sampling\ntemperature = 1\n")
    with pytest.raises(EdgeAIError, match="not valid TOML") as info:
        config.load()
    assert str(path) in str(info.value)
    path.write_text("[sampling]\ntemperature = 'warm'\n")
    with pytest.raises(EdgeAIError, match="sampling.temperature' from .*config.toml"):
        config.load()


def test_atomic_outputs_get_normal_permissions(tmp_path: Path) -> None:
    from edge_ai.fileio import atomic_write_text

    target = tmp_path / "out.txt"
    atomic_write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_set_values_is_all_or_nothing() -> None:
    with pytest.raises(EdgeAIError, match="sampling.top_p"):
        config.set_values({"sampling.temperature": "0.1", "sampling.top_p": "7"})
    assert not get_paths().config_file.exists()
    assert config.set_values({"sampling.temperature": "0.1", "sampling.top_k": "5"}) == {
        "sampling.temperature": 0.1, "sampling.top_k": 5}
    cfg = config.load()
    assert cfg.sampling.temperature == 0.1 and cfg.sampling.top_k == 5

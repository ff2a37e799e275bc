"""The default model's KV cache: estimate, llama.cpp's own allocation, and what doctor / models info show.

Gemma 3 270M has 18 layers of one 256-wide KV head, 15 of them sliding over 512 tokens. At context
4096 with llama.cpp's default window-sized cache (512 + n_ubatch 512 = 1024 cells) that is
3 x 4096 + 15 x 1024 cells x 1 KiB = 27 MiB; with swa_full, 18 x 4096 x 1 KiB = 72 MiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from memory_log import MIB, allocated, assert_close

from edge_ai.gguf_file import read_gguf
from edge_ai.kv_cache import kv_cache_bytes, recurrent_state_bytes


@pytest.mark.slow
@pytest.mark.parametrize(("swa_full", "mib"), [(False, 27), (True, 72)])
def test_default_model_kv_cache_is_what_llama_cpp_allocates(model_path: Path, caplog, swa_full: bool, mib: int) -> None:
    info = read_gguf(model_path)
    estimate = kv_cache_bytes(info, 4096, n_ubatch=512, swa_full=swa_full)
    assert estimate == mib * MIB
    kv, recurrent = allocated(model_path, caplog, n_ctx=4096, n_batch=512, n_ubatch=512, swa_full=swa_full)
    assert_close(estimate, kv, f"gemma3-270m swa_full={swa_full}")
    assert recurrent == recurrent_state_bytes(info) == 0


def _edge_ai(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", **env})


def test_models_info_shows_the_kv_cache_at_the_configured_context(model_path: Path) -> None:
    result = _edge_ai("models", "info", str(model_path), "--json", EDGE_AI_MODEL_CONTEXT="4096",
                      EDGE_AI_MODEL_SWA_FULL="false")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert summary["context"] == 4096
    assert summary["kv_cache_bytes"] == 27 * MIB
    assert summary["recurrent_state_bytes"] == 0


def test_doctor_shows_the_kv_cache_with_each_model(registered_model: Path) -> None:
    result = _edge_ai("doctor", EDGE_AI_MODEL_CONTEXT="4096", EDGE_AI_MODEL_SWA_FULL="true")
    assert "gemma3-270m" in result.stdout, result.stderr
    assert "(KV cache 72 MiB)" in result.stdout

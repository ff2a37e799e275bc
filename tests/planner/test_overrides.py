"""Tensor buffer-type overrides applied through ctypes, and saved plans reaching the engine.

A tiny random Qwen2-MoE converted by our converter loads with every routed expert overridden to the
CPU buffer type (llama.cpp's --cpu-moe): its load log confirms each expert tensor, and greedy
decoding gives the same tokens as the plain load.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_ai import registry
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf
from edge_ai.paths import get_paths
from edge_ai.tensor_roles import expert_tensor_names
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import SamplingParams, TokenEvent
from runtime.llm.loading import with_saved_plan
from runtime.planner.plan import expert_overrides

PROMPT = "the cat sat on the mat and then"
GREEDY = SamplingParams(temperature=0.0, max_tokens=24, seed=1)
OVERRIDDEN = re.compile(r"tensor (\S+) \(.*\) buffer type overridden to CPU")


def _generate(path: Path, caplog: pytest.LogCaptureFixture, **options: object) -> tuple[str, list[str]]:
    """(greedy continuation of PROMPT, tensors the load log says were overridden)."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="llama.cpp"):
        engine = Engine(path, options=EngineOptions(context=256, threads=2, batch=64, **options))
    try:
        text = "".join(e.text for e in engine.complete(PROMPT, GREEDY) if isinstance(e, TokenEvent))
    finally:
        engine.close()
    log = [r.getMessage() for r in caplog.records if r.name == "llama.cpp"]
    return text, [m.group(1) for line in log for m in [OVERRIDDEN.search(line)] if m]


@pytest.mark.slow
def test_cpu_moe_overrides_every_expert_and_keeps_the_tokens(tiny_moe, caplog) -> None:
    path = tiny_moe("qwen2moe")
    info = read_gguf(path)
    experts = expert_tensor_names(info)
    assert len(experts) == 6  # gate, up, down x 2 layers
    plain, none = _generate(path, caplog)
    moved, overridden = _generate(path, caplog, tensor_overrides=tuple(expert_overrides([0, 1])))
    assert none == [] and sorted(overridden) == sorted(experts)
    assert moved == plain and len(plain) > 0


@pytest.mark.slow
def test_n_cpu_moe_moves_only_the_first_layers(tiny_moe, caplog) -> None:
    path = tiny_moe("qwen2moe")
    _, overridden = _generate(path, caplog, tensor_overrides=tuple(expert_overrides([0])))
    assert sorted(overridden) == sorted(n for n in expert_tensor_names(read_gguf(path)) if n.startswith("blk.0."))


@pytest.mark.slow
def test_quantized_kv_cache_with_flash_attention_loads(tiny_moe, caplog) -> None:
    text, _ = _generate(tiny_moe("qwen3moe"), caplog, kv_type="q8_0", flash_attn=True)
    assert text
    assert any("K (q8_0)" in r.getMessage() for r in caplog.records if r.name == "llama.cpp")


@pytest.mark.slow
@pytest.mark.parametrize(("pattern", "wording"), [(r"^blk\.9\.ffn_up_exps\.weight$", "matches no tensor"),
                                                  (r"blk\.(0", "is not a regular expression")])
def test_bad_override_pattern_is_refused_before_loading(tiny_moe, pattern: str, wording: str) -> None:
    with pytest.raises(EdgeAIError, match=wording):
        Engine(tiny_moe("qwen2moe"), options=EngineOptions(context=256, tensor_overrides=((pattern, "CPU"),)))


@pytest.mark.slow
def test_applied_plan_is_what_chat_ask_and_serve_load(tiny_moe) -> None:
    path = str(tiny_moe("qwen2moe"))
    env = {**os.environ, "COLUMNS": "200"}
    run = subprocess.run([sys.executable, "-m", "edge_ai", "plan", path, "--cpu-moe", "--ctx", "1024", "--apply"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert "saved" in run.stderr
    options = with_saved_plan(EngineOptions(), path)
    assert options.context == 1024 and options.tensor_overrides == tuple(expert_overrides([0, 1]))
    ask = subprocess.run([sys.executable, "-m", "edge_ai", "ask", "-m", path, "-n", "8", "hello"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert ask.returncode == 0, ask.stderr
    assert "tensor overrides to CPU" in get_paths().log_file.read_text()  # llama.cpp's warning: they reached it
    assert registry.saved_plan("some-other-model") == {}

"""`edge-ai doctor` shows the memory planner's verdict for each registered model, one line each:
fits / fits with experts in RAM / pages from disk / does not fit, with the budget as the only input."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from edge_ai import registry
from edge_ai.doctor import run_doctor
from edge_ai.gguf_file import read_gguf
from edge_ai.tensor_roles import Role, weights
from runtime.planner.plan import GIB, MARGIN_FRACTION, Budget, Request, make_plan, model_fit


def _paged_budget(path: Path) -> int:
    """A RAM budget with room for everything but half of the routed experts."""
    info = read_gguf(path)
    whole = make_plan(info, Budget(ram=GIB), Request(ctx=256))
    return int((whole.cpu.total - weights(info).by_role[Role.EXPERTS] // 2) / (1 - MARGIN_FRACTION))


def _row(report: str, model: str) -> str:
    """The doctor table's line for `model` (rich pads the first column)."""
    return next(line.strip() for line in report.splitlines() if line.split()[:1] == [model])


@pytest.mark.slow
def test_the_four_verdicts(tiny_moe, model_path: Path) -> None:
    moe = read_gguf(tiny_moe("qwen2moe"))
    assert model_fit(moe, ram=GIB, ctx=256).line().startswith("fits (context 256, f16 KV cache")
    paged = model_fit(moe, ram=_paged_budget(tiny_moe("qwen2moe")), ctx=256)
    assert paged.verdict == "pages from disk" and paged.fits and "of experts paged in from the file" in paged.detail
    everything = make_plan(moe, Budget(ram=GIB, vram=GIB), Request(ctx=1024))
    one_layer = weights(moe).per_layer[0][Role.EXPERTS]
    vram = int((everything.gpu.total - one_layer // 2) / (1 - MARGIN_FRACTION))
    split = model_fit(moe, ram=GIB, vram=vram, ctx=1024)
    assert split.verdict == "fits with experts in RAM" and "experts of 1 of 2 layers in RAM" in split.detail
    short = model_fit(read_gguf(model_path), ram=200 * 1024**2, ctx=4096)  # a dense model cannot page
    assert (short.verdict, short.fits) == ("does not fit", False) and "short at context 4096" in short.detail


@pytest.mark.slow
def test_doctor_prints_one_verdict_line_per_model(tiny_moe, registered_model: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    moe = tiny_moe("qwen2moe")
    registry.add(moe, name="tiny-moe")
    monkeypatch.setenv("EDGE_AI_MODEL_CONTEXT", "256")
    result = subprocess.run([sys.executable, "-m", "edge_ai", "doctor"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0, result.stdout
    moe_row = _row(result.stdout, "tiny-moe")
    assert "fits (context 256, f16 KV cache" in moe_row and moe_row.endswith("ok")
    assert "fits (context 256" in _row(result.stdout, "gemma3-270m")
    # the same report with a RAM budget that holds the always-used weights and half of the experts
    budget = _paged_budget(moe)
    console = Console(file=io.StringIO(), width=250)
    code = run_doctor(console, "CPU", False, fit=lambda info, **kw: model_fit(info, **{**kw, "ram": budget}))
    text = console.file.getvalue()
    assert "pages from disk (" in _row(text, "tiny-moe"), text
    assert "does not fit (" in _row(text, "gemma3-270m") and _row(text, "gemma3-270m").endswith("does not fit in free RAM")
    assert code == 1  # a registered model that cannot be used

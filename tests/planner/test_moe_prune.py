"""`edge-ai moe prune`: a tiny random Qwen2-MoE (4 experts, 2 per token, shared experts) keeps its 3
busiest experts per layer; the copy's experts and router rows are the source's bytes, its metadata
says 3, it loads and generates, and its KL divergence against the full model comes from the eval code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from convert.evaluate import evaluate
from convert.moe_prune import prune_experts
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import diagnose, read_gguf
from edge_ai.tensor_roles import weights
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import SamplingParams, TokenEvent
from runtime.planner.profile import ExpertProfile, run_profile

TEXT = ("The river bends past the mill where the old miller keeps his cats. In spring the water rises "
        "and the children watch boats drift by, counting sails: one, two, three, and then many more. ") * 12


@pytest.fixture(scope="module")
def profiled(tiny_moe) -> tuple[Path, ExpertProfile]:
    path = tiny_moe("qwen2moe")
    return path, run_profile(read_gguf(path), TEXT, n_ctx=128)


@pytest.mark.slow
def test_pruned_copy_keeps_the_busiest_experts_bytes_and_runs(profiled, tmp_path: Path) -> None:
    source, profile = profiled
    out = tmp_path / "pruned.gguf"
    report = prune_experts(read_gguf(source), profile, 0.75, out)
    assert report.n_kept == 3 and report.kept == {il: sorted(profile.hot_experts(il, 3)) for il in (0, 1)}
    assert 0.75 <= report.routing_share < 1 and report.bytes_after < report.bytes_before
    assert [p.name for p in tmp_path.iterdir()] == ["pruned.gguf"]  # no temp file left beside it
    info = read_gguf(out)
    assert diagnose(info) == [] and info.metadata["qwen2moe.expert_count"] == 3
    assert weights(info).n_expert == 3 and weights(info).n_expert_used == 2
    src = {t.name: t.data for t in GGUFReader(source).tensors}
    for tensor in GGUFReader(out).tensors:
        il = int(tensor.name.split(".")[1]) if tensor.name.startswith("blk.") else None
        if "_exps." in tensor.name or "ffn_gate_inp.weight" in tensor.name:
            assert tensor.data.shape[0] == 3
            np.testing.assert_array_equal(tensor.data, src[tensor.name][report.kept[il]])
        else:
            np.testing.assert_array_equal(tensor.data, src[tensor.name])  # shared experts and the rest untouched
    engine = Engine(out, options=EngineOptions(context=256, batch=64))
    try:
        tokens = [e for e in engine.complete("the cat sat", SamplingParams(max_tokens=8, temperature=0.0))
                  if isinstance(e, TokenEvent)]
    finally:
        engine.close()
    assert tokens  # it generates (a random model may end before max_tokens)
    result = evaluate(out, TEXT, reference=source, ctx=128, speed=False)
    assert result.kld_mean is not None and result.kld_mean > 0 and 0 <= result.top1 <= 100
    print(f"pruned 4->3 experts: KLD {result.kld_mean:.4f}, top-1 {result.top1:.1f}%")


@pytest.mark.slow
def test_bad_prunes_are_refused(profiled, model_path: Path, tmp_path: Path) -> None:
    source, profile = profiled
    info = read_gguf(source)
    with pytest.raises(EdgeAIError, match="every token uses 2"):
        prune_experts(info, profile, 0.25, tmp_path / "x.gguf")
    with pytest.raises(EdgeAIError, match="between 0 and 1"):
        prune_experts(info, profile, 1.0, tmp_path / "x.gguf")
    with pytest.raises(EdgeAIError, match="is a dense model"):
        prune_experts(read_gguf(model_path), profile, 0.75, tmp_path / "x.gguf")
    other = ExpertProfile(model="other.gguf", tokens=1, n_expert=8, n_expert_used=2, counts={0: [1] * 8})
    with pytest.raises(EdgeAIError, match="made for other.gguf"):
        prune_experts(info, other, 0.75, tmp_path / "x.gguf")
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_prunes_and_reports_kld(profiled, tmp_path: Path) -> None:
    source, profile = profiled
    profile.save(tmp_path / "p.json")
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    args = ["moe", "prune", str(source), "--profile", "p.json", "--keep", "0.75", "-o", "small.gguf", "--text", "t.txt",
            "--ctx", "128"]
    run = subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=180,
                         cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert "3 of 4 experts per layer" in run.stdout and "KL divergence" in run.stdout and "top-1 agreement" in run.stdout
    again = subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=180,
                           cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert again.returncode == 1 and again.stderr.startswith("error: ") and "--force" in again.stderr

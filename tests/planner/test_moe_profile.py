"""`edge-ai moe profile`: the router's picks read through llama.cpp's eval callback on tiny
converted MoE models; counts add up to tokens x expert layers x experts per token; a plan paging
experts from disk keeps the busiest ones resident."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf
from edge_ai.tensor_roles import Role, weights
from runtime.planner.plan import GIB, Budget, Request, make_plan
from runtime.planner.profile import TOPK_PREFIX, ExpertProfile, run_profile

TEXT = ("The river bends past the mill where the old miller keeps his cats. In spring the water rises "
        "and the children watch boats drift by, counting sails: one, two, three, and then many more. ") * 12


def _edge_ai(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=180,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.slow
def test_profile_counts_every_pick_of_every_token(tiny_moe) -> None:
    info = read_gguf(tiny_moe("qwen3moe"))
    profile = run_profile(info, TEXT, n_ctx=128)  # several windows
    assert profile.tokens > 128 and (profile.n_expert, profile.n_expert_used) == (4, 2)
    assert sorted(profile.counts) == [0, 1]
    for row in profile.counts.values():
        assert sum(row) == profile.tokens * profile.n_expert_used
    assert len({tuple(row) for row in profile.counts.values()}) == 2  # the layers route differently
    hot = profile.hot_experts(0, 2)
    assert profile.routing_share(0, hot) >= 0.5 >= profile.routing_share(0, [e for e in range(4) if e not in hot])


@pytest.mark.slow
def test_cli_saves_json_and_prints_a_heatmap(tiny_moe, tmp_path: Path) -> None:
    text = tmp_path / "calibration.txt"
    text.write_text(TEXT, encoding="utf-8")
    result = _edge_ai("moe", "profile", str(tiny_moe("qwen2moe")), "--text", str(text), "-o", "p.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("blk.") == 2 and "saved p.json" in result.stderr
    profile = ExpertProfile.load(tmp_path / "p.json")
    assert sum(map(sum, profile.counts.values())) == profile.tokens * 2 * 2
    assert json.loads((tmp_path / "p.json").read_text())["model"] == "qwen2moe-f32.gguf"


@pytest.mark.slow
def test_dense_model_is_refused(model_path: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello", encoding="utf-8")
    result = _edge_ai("moe", "profile", str(model_path), "--text", str(text), cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "is a dense model" in result.stderr
    assert not list(tmp_path.glob("*.json"))
    with pytest.raises(EdgeAIError, match="not an expert profile"):
        ExpertProfile.load(text)


@pytest.mark.slow
def test_paged_plan_keeps_the_busiest_experts_resident(tiny_moe) -> None:
    info = read_gguf(tiny_moe("qwen2moe"))
    profile = run_profile(info, TEXT, n_ctx=128)
    roomy = make_plan(info, Budget(ram=GIB), Request(ctx=256), profile=profile)
    assert roomy.mode == "ram" and roomy.hot_experts == {}  # nothing paged, nothing to choose
    experts = weights(info).by_role[Role.EXPERTS]
    budget = int((roomy.cpu.total - experts / 2) / 0.95)  # room for about half the experts
    plan = make_plan(info, Budget(ram=budget), Request(ctx=256), profile=profile)
    assert plan.mode == "mmap-paged" and plan.resident_routing_share is not None
    kept = sum(map(len, plan.hot_experts.values()))
    assert 3 <= kept <= 4
    for layer, hot in plan.hot_experts.items():
        assert hot == profile.hot_experts(layer, len(hot))  # busiest first, per layer
    picks = sum(profile.routing_share(il, hot) * profile.tokens * 2 for il, hot in plan.hot_experts.items())
    assert plan.resident_routing_share == pytest.approx(picks / (profile.tokens * 2 * 2))
    assert plan.resident_routing_share >= kept / 8  # the busy ones serve more than their head count
    other = ExpertProfile(model="other.gguf", tokens=1, n_expert=8, n_expert_used=2, counts={0: [1] * 8, 1: [1] * 8})
    with pytest.raises(EdgeAIError, match="made for other.gguf"):
        make_plan(info, Budget(ram=budget), Request(ctx=256), profile=other)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen3moe", "mixtral"])
def test_tapped_picks_are_the_hf_routers_choice(tiny_moe_build, arch: str) -> None:
    """Every token's chosen experts, read from llama.cpp, equal the top-k of transformers' router logits."""
    import llama_cpp
    import torch
    import transformers

    from runtime.llamacpp.overrides import TensorTap, tapped

    checkpoint, path = tiny_moe_build(arch)
    ids = checkpoint.encode(TEXT[:400])
    tap = TensorTap(TOPK_PREFIX)
    with tapped(tap):
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_batch=512, n_ubatch=512, logits_all=True,
                              n_threads=2, verbose=False)
    try:
        llm.eval(ids)
    finally:
        llm.close()
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint.path, dtype=torch.float32)
    with torch.no_grad():
        router = model(torch.tensor([ids]), output_router_logits=True).router_logits
    for layer, logits in enumerate(router):
        want = [sorted(row) for row in torch.topk(logits, 2, dim=-1).indices.tolist()]
        assert [sorted(row) for row in tap.rows[layer]] == want, f"{arch} layer {layer}"

"""The planner's decisions on real GGUF headers (Gemma 3 270M, a tiny converted Qwen2-MoE) and budgets
chosen around their sizes: experts leave the GPU before anything else, the context shrinks to fit,
quantized KV only when heads allow it, impossible plans say what is missing, and the CLI's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf
from edge_ai.tensor_roles import Role, role_of, weights
from runtime.planner.plan import GIB, MIB, Budget, Request, impossible_message, make_plan


def _edge_ai(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize(("name", "role"), [
    ("blk.3.ffn_gate_exps.weight", Role.EXPERTS), ("blk.0.ffn_down_shexp.weight", Role.SHARED_EXPERTS),
    ("blk.0.ffn_gate_inp.weight", Role.ROUTER), ("blk.0.ffn_gate_inp_shexp.weight", Role.SHARED_EXPERTS),
    ("blk.1.exp_probs_b.bias", Role.ROUTER), ("blk.2.attn_q.weight", Role.ATTENTION),
    ("blk.2.attn_q_norm.weight", Role.NORMS), ("blk.2.ffn_up.weight", Role.DENSE_FFN),
    ("token_embd.weight", Role.EMBEDDINGS), ("output.weight", Role.OUTPUT), ("output_norm.weight", Role.NORMS),
])
def test_tensor_roles(name: str, role: Role) -> None:
    assert role_of(name) is role


@pytest.mark.slow
def test_moe_weights_by_role_add_up_and_read_a_share_of_experts(tiny_moe) -> None:
    info = read_gguf(tiny_moe("qwen2moe"))
    w = weights(info)
    assert w.total == sum(t.nbytes for t in info.tensors)
    assert w.is_moe and w.expert_layers == [0, 1] and (w.n_expert, w.n_expert_used) == (4, 2)
    assert w.by_role[Role.SHARED_EXPERTS] > 0 and w.by_role[Role.ROUTER] > 0
    expected = w.total - w.by_role[Role.EMBEDDINGS] - w.by_role[Role.EXPERTS] / 2  # untied head, half the experts
    assert w.read_per_token() == pytest.approx(expected)


@pytest.mark.slow
def test_experts_leave_the_gpu_first_layer_by_layer(tiny_moe) -> None:
    info = read_gguf(tiny_moe("qwen2moe"))
    w = weights(info)
    everything = make_plan(info, Budget(ram=GIB, vram=GIB), Request(ctx=1024))
    assert (everything.n_gpu_layers, everything.n_cpu_moe) == (3, 0)
    need = everything.gpu.total
    one_layer = w.per_layer[0][Role.EXPERTS]
    # VRAM for everything but one layer's experts (the 5% margin included): layer 0's experts go to RAM.
    tight = make_plan(info, Budget(ram=GIB, vram=int((need - one_layer // 2) / 0.95)), Request(ctx=1024))
    assert (tight.n_gpu_layers, tight.n_cpu_moe) == (3, 1)
    assert tight.tensor_overrides() == [(r"^blk\.(0)\.ffn_[a-z_]+_exps\.[a-z]+$", "CPU")]
    assert tight.load_options()["tensor_overrides"] == []  # no GPU backend here: nothing to keep off it
    assert "--n-cpu-moe" in tight.llama_cpp_flags() and tight.gpu.weights == everything.gpu.weights - one_layer
    no_experts = make_plan(info, Budget(ram=GIB, vram=int((need - 2 * one_layer + 1024) / 0.95)), Request(ctx=1024))
    assert (no_experts.n_gpu_layers, no_experts.n_cpu_moe) == (3, 2) and "--cpu-moe" in no_experts.llama_cpp_flags()
    assert any("no GPU backend" in note for note in no_experts.notes)


@pytest.mark.slow
def test_context_shrinks_to_the_budget_and_quantized_kv_only_with_whole_blocks(model_path: Path, tiny_moe) -> None:
    gemma = read_gguf(model_path)
    roomy = make_plan(gemma, Budget(ram=8 * GIB))
    assert roomy.ctx == 32768 and roomy.kv_type == "f16" and roomy.fits
    smaller = make_plan(gemma, Budget(ram=roomy.cpu.total - 100 * MIB))
    assert smaller.fits and 256 <= smaller.ctx < 32768 and smaller.cpu.total + smaller.cpu.margin <= smaller.cpu.budget
    assert make_plan(gemma, Budget(ram=8 * GIB), Request(kv_type="q8_0")).flash_attn
    mixtral = read_gguf(tiny_moe("mixtral"))  # 16-value heads: no q8_0/q4_0 cache
    assert make_plan(mixtral, Budget(ram=GIB)).kv_type == "f16"
    with pytest.raises(EdgeAIError, match="multiple of 32"):
        make_plan(mixtral, Budget(ram=GIB), Request(kv_type="q4_0"))


@pytest.mark.slow
def test_impossible_plan_says_how_much_is_missing(model_path: Path) -> None:
    plan = make_plan(read_gguf(model_path), Budget(ram=200 * MIB), Request(ctx=4096))
    assert not plan.fits and plan.missing > 0
    message = impossible_message(plan)
    assert "does not fit" in message and "more RAM" in message and "smaller quantization" in message


@pytest.mark.slow
def test_moe_bigger_than_ram_runs_from_mmap_when_the_rest_fits(tiny_moe) -> None:
    info = read_gguf(tiny_moe("qwen2moe"))
    w = weights(info)
    fits = make_plan(info, Budget(ram=GIB), Request(ctx=256))
    budget = int((fits.cpu.total - w.by_role[Role.EXPERTS] // 2) / 0.95)
    paged = make_plan(info, Budget(ram=budget), Request(ctx=256))
    assert paged.fits and paged.mode == "mmap-paged" and "paged in from disk" in paged.notes[0]


@pytest.mark.slow
def test_cli_prints_the_plan_and_flags(model_path: Path) -> None:
    result = _edge_ai("plan", str(model_path), "--ram", "2G", "--ctx", "4096", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ctx"] == 4096 and data["fits"] and data["llama_cpp_flags"][:4] == ["-m", str(model_path), "-c", "4096"]
    assert data["speed"]["bandwidth_source"].startswith("measured")
    assert data["speed"]["tokens_per_s_full_context"] <= data["speed"]["tokens_per_s_empty_context"]
    table = _edge_ai("plan", str(model_path), "--ram", "2G", "--vram", "1G")
    assert table.returncode == 0, table.stderr
    assert "llama.cpp: llama-cli -m" in table.stdout and "no GPU backend" in table.stdout
    assert "mmap off: every layer and the output are copied to the GPU" in table.stdout  # what a GPU build loads


@pytest.mark.parametrize(("args", "wording"), [
    (("--ram", "lots"), "is not a size"),
    (("--kv-type", "q3"), "is not one of f16, q8_0, q4_0"),
    (("--unified", "8G", "--ram", "4G"), "give it alone"),
    (("--ram", "200M"), "does not fit"),
])
def test_cli_bad_input_is_one_line(model_path: Path, args: tuple[str, ...], wording: str) -> None:
    result = _edge_ai("plan", str(model_path), *args)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and wording in result.stderr and result.stderr.count("\n") == 1

"""Mixture-of-experts families (Qwen2-MoE, Qwen3-MoE, Mixtral) against transformers.

Tiny random checkpoints: 4 experts, 2 used per token, 2 layers, width 64. Tolerance: f32 GGUF
logits vs transformers float32 logits, every position of the prompt:
max|llama - hf| / max|hf| <= 1e-3 (reached: ~5e-7 on all three).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from tiny_hf import (
    TEXTS,
    assert_logits_match,
    gguf_value,
    llama_logits,
    load_llama,
    relative_error,
)
from tiny_hf_more import save_fused_experts

from convert.gguf import convert_checkpoint
from convert.gguf.archs.moe import MIXTRAL, QWEN2MOE, QWEN3MOE
from convert.gguf.hparams import ModelConfig
from edge_ai.errors import EdgeAIError

PROMPT = TEXTS[0] + " " + TEXTS[8] + " " + TEXTS[5]
MOES = ("qwen2moe", "qwen3moe", "mixtral")
GGUF_ARCH = {"qwen2moe": "qwen2moe", "qwen3moe": "qwen3moe", "mixtral": "llama"}


@pytest.fixture
def moe(converted_more: Callable[[str], Any]) -> Callable[[str], Any]:
    return converted_more


def _tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.asarray(t.data) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.slow
@pytest.mark.parametrize("arch", MOES)
def test_logits_match_transformers(moe, arch: str) -> None:
    c = moe(arch)
    ids = c.checkpoint.encode(PROMPT)
    assert len(ids) > 40
    assert_logits_match(c, ids, arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", MOES)
def test_tokenizer_matches_reference(moe, arch: str) -> None:
    c = moe(arch)
    for text in TEXTS:
        assert c.llm.tokenize(text.encode(), add_bos=True, special=False) == c.checkpoint.encode(text), text


@pytest.mark.slow
@pytest.mark.parametrize("arch", MOES)
def test_metadata_and_stacked_experts(moe, arch: str) -> None:
    from safetensors.numpy import load_file

    c = moe(arch)
    name = GGUF_ARCH[arch]
    reader = gguf.GGUFReader(c.gguf)
    assert c.report.architecture == gguf_value(reader, "general.architecture") == name
    assert gguf_value(reader, f"{name}.expert_count") == 4
    assert gguf_value(reader, f"{name}.expert_used_count") == 2
    n_ff_exp = 128 if arch == "mixtral" else 32
    if arch != "mixtral":
        assert gguf_value(reader, f"{name}.expert_feed_forward_length") == 32
    if arch == "qwen2moe":
        assert gguf_value(reader, "qwen2moe.expert_shared_feed_forward_length") == 48
    if arch == "qwen3moe":
        assert gguf_value(reader, "qwen3moe.attention.key_length") == 32

    got = _tensors(c.gguf)
    assert got["blk.1.ffn_gate_exps.weight"].shape == (4, n_ff_exp, 64)
    assert got["blk.1.ffn_down_exps.weight"].shape == (4, 64, n_ff_exp)
    assert got["blk.1.ffn_gate_inp.weight"].shape == (4, 64)
    hf: dict[str, np.ndarray] = {}
    for shard in c.checkpoint.path.glob("model*.safetensors"):
        hf.update(load_file(shard))
    if arch == "mixtral":
        block, parts = "model.layers.1.block_sparse_moe", {"gate": "w1", "up": "w3", "down": "w2"}
        np.testing.assert_array_equal(got["blk.1.ffn_gate_inp.weight"], hf[f"{block}.gate.weight"])
        assert not np.array_equal(got["blk.1.attn_q.weight"], hf["model.layers.1.self_attn.q_proj.weight"])  # permuted
    else:
        block, parts = "model.layers.1.mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
        np.testing.assert_array_equal(got["blk.1.ffn_gate_inp.weight"], hf[f"{block}.gate.weight"])
    for kind, hf_name in parts.items():
        stacked = np.stack([hf[f"{block}.experts.{e}.{hf_name}.weight"] for e in range(4)])
        np.testing.assert_array_equal(got[f"blk.1.ffn_{kind}_exps.weight"], stacked)
    if arch == "qwen2moe":
        assert got["blk.0.ffn_gate_inp_shexp.weight"].shape == (1, 64)
        np.testing.assert_array_equal(got["blk.0.ffn_down_shexp.weight"],
                                      hf["model.layers.0.mlp.shared_expert.down_proj.weight"])
    if arch == "qwen3moe":
        assert "blk.0.attn_q_norm.weight" in got and "blk.0.attn_q.bias" not in got


@pytest.mark.slow
@pytest.mark.parametrize("arch", ("qwen2moe", "mixtral"))
def test_fused_expert_layout_gives_the_same_gguf(moe, arch: str, tmp_path: Path) -> None:
    """transformers 5 holds experts fused (`mlp.experts.gate_up_proj` [E, 2F, D], `mlp.experts.down_proj`,
    Mixtral under `mlp.` too); a checkpoint written that way converts to the same tensors."""
    c = moe(arch)
    src = save_fused_experts(c.checkpoint, tmp_path / "fused")
    report = convert_checkpoint(src, tmp_path / "fused.gguf", outtype="f32")
    a, b = _tensors(c.gguf), _tensors(report.output)
    assert a.keys() == b.keys()
    for name, value in a.items():
        np.testing.assert_array_equal(value, b[name], err_msg=name)


@pytest.mark.slow
def test_f16_keeps_routers_f32_and_runs(moe, tmp_path: Path) -> None:
    c = moe("qwen2moe")
    report = convert_checkpoint(c.checkpoint.path, tmp_path / "q.gguf", outtype="f16")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(report.output).tensors}
    assert types["blk.0.ffn_gate_inp.weight"] == types["blk.0.ffn_gate_inp_shexp.weight"] == Q.F32
    assert types["blk.0.ffn_gate_exps.weight"] == types["blk.0.ffn_up_shexp.weight"] == Q.F16
    ids = c.checkpoint.encode(PROMPT)
    llm = load_llama(report.output)
    try:
        got = llama_logits(llm, ids)
    finally:
        llm.close()
    err = relative_error(got, c.checkpoint.model(ids))
    print(f"qwen2moe f16: max relative logit error {err:.2e}")
    assert err <= 5e-3


# ---------------------------------------------------------------- refusals (config rules, no model needed)

BASE = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_experts": 4,
        "num_experts_per_tok": 2, "shared_expert_intermediate_size": 48}


def _warnings(arch: Any, **extra: Any) -> list[str]:
    config = ModelConfig({**BASE, **extra})
    return [w for check in arch.checks for w in check(config)]


@pytest.mark.parametrize(("arch", "extra", "pattern"), [
    (QWEN2MOE, {"norm_topk_prob": True}, "keeps the top-k expert weights unnormalized"),
    (QWEN3MOE, {}, "norm_topk_prob=false.*always renormalizes"),
    (QWEN3MOE, {"norm_topk_prob": False}, "norm_topk_prob=false"),
    (QWEN2MOE, {"decoder_sparse_step": 2}, "dense layers"),
    (QWEN3MOE, {"norm_topk_prob": True, "mlp_only_layers": [0]}, "dense layers"),
    (QWEN2MOE, {"tie_word_embeddings": True}, "output matrix"),
    (QWEN2MOE, {"shared_expert_intermediate_size": 0}, "shared expert"),
    (MIXTRAL, {"num_local_experts": 2, "num_experts": None, "num_experts_per_tok": 3}, "more than the 2 experts"),
])
def test_refuses_what_llama_cpp_would_run_differently(arch: Any, extra: dict[str, Any], pattern: str) -> None:
    with pytest.raises(EdgeAIError, match=pattern):
        _warnings(arch, **extra)


def test_accepts_the_usual_configs() -> None:
    assert _warnings(QWEN2MOE) == []  # Qwen1.5-MoE: norm_topk_prob false
    assert _warnings(QWEN3MOE, norm_topk_prob=True) == []  # Qwen3-30B-A3B
    assert _warnings(MIXTRAL, num_local_experts=8, num_experts=None, norm_topk_prob=False) == []  # not read


@pytest.mark.slow
def test_missing_expert_is_named(moe, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "src"
    shutil.copytree(moe("qwen3moe").checkpoint.path, src)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    victim = "model.layers.1.mlp.experts.3.up_proj.weight"
    shard = src / index["weight_map"].pop(victim)
    tensors = load_file(shard)
    del tensors[victim]
    save_file(tensors, shard, metadata={"format": "pt"})
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EdgeAIError, match=r"expert 3 of model\.layers\.1\.mlp\.experts\.up_proj\.weight is missing"):
        convert_checkpoint(src, out / "m.gguf")
    assert list(out.iterdir()) == []

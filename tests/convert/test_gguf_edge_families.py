"""OLMoE, Granite-MoE, SmolLM3, DeepSeek-V2/V3 (MLA), GLM-4.5 MoE, LFM2 and gpt-oss against transformers 4.57.

Tiny random checkpoints from tiny_hf_more (4 experts, 2 used, width 64). Tolerance as for the other
families: f32 GGUF logits vs transformers float32 logits at every prompt position,
max|llama - hf| / max|hf| <= 1e-3, same argmax; tokenization identical on every TEXTS entry.
gpt-oss's MXFP4 experts stay MXFP4 in the GGUF: their values are checked bit-exact against the
dequantized checkpoint, and the logits within MXFP4_TOLERANCE, because llama.cpp multiplies MXFP4
weights by activations it first rounds to 8 bits (Q8_0); the dequantized checkpoint meets 1e-3.
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
from tiny_hf import TEXTS, assert_logits_match, gguf_value, llama_logits, load_llama, relative_error
from tiny_hf_more import save_dequantized

from convert.gguf import convert_checkpoint
from convert.gguf.archs.deepseek import DEEPSEEK2
from convert.gguf.archs.glm import GLM4_MOE
from convert.gguf.archs.gpt_oss import GPT_OSS
from convert.gguf.archs.granite import GRANITE_MOE
from convert.gguf.archs.lfm2 import LFM2
from convert.gguf.archs.olmoe import OLMOE
from convert.gguf.archs.smollm3 import SMOLLM3
from convert.gguf.hparams import ModelConfig
from edge_ai.errors import EdgeAIError

PROMPT = TEXTS[0] + " " + TEXTS[8] + " " + TEXTS[5]
FAMILIES = ("olmoe", "granitemoe", "smollm3", "deepseek_v2", "deepseek_v3", "glm4moe", "lfm2")
MXFP4_TOLERANCE = 2e-2  # reached: ~6e-3 (8-bit activations); a mis-packed block gives ~1


@pytest.fixture
def family(converted_more: Callable[[str], Any]) -> Callable[[str], Any]:
    return converted_more


def _tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.asarray(t.data) for t in gguf.GGUFReader(path).tensors}


def _hf_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out: dict[str, np.ndarray] = {}
    for shard in path.glob("model*.safetensors"):
        out.update(load_file(shard))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAMILIES)
def test_logits_match_transformers(family, arch: str) -> None:
    c = family(arch)
    ids = c.checkpoint.encode(PROMPT)
    assert len(ids) > 40
    assert_logits_match(c, ids, arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAMILIES + ("gpt_oss",))
def test_tokenizer_matches_reference(family, arch: str) -> None:
    c = family(arch)
    for text in TEXTS:
        assert c.llm.tokenize(text.encode(), add_bos=True, special=False) == c.checkpoint.encode(text), text


@pytest.mark.slow
def test_olmoe_metadata_and_whole_width_qk_norms(family) -> None:
    c = family("olmoe")
    reader = gguf.GGUFReader(c.gguf)
    assert c.report.architecture == gguf_value(reader, "general.architecture") == "olmoe"
    assert gguf_value(reader, "olmoe.expert_count") == 4
    assert gguf_value(reader, "olmoe.expert_used_count") == 2
    got = _tensors(c.gguf)
    assert got["blk.0.attn_q_norm.weight"].shape == got["blk.0.attn_k_norm.weight"].shape == (64,)
    assert got["blk.1.ffn_gate_exps.weight"].shape == (4, 32, 64)
    assert "output.weight" in got


@pytest.mark.slow
def test_granite_multipliers_and_split_experts(family) -> None:
    c = family("granitemoe")
    reader = gguf.GGUFReader(c.gguf)
    assert gguf_value(reader, "granitemoe.embedding_scale") == pytest.approx(12.0)
    assert gguf_value(reader, "granitemoe.attention.scale") == pytest.approx(0.1)
    assert gguf_value(reader, "granitemoe.residual_scale") == pytest.approx(0.22)
    assert gguf_value(reader, "granitemoe.logit_scale") == pytest.approx(4.0)
    got, hf = _tensors(c.gguf), _hf_tensors(c.checkpoint.path)
    fused = hf["model.layers.1.block_sparse_moe.input_linear.weight"]  # [E, 2F, D], gate rows first
    np.testing.assert_array_equal(got["blk.1.ffn_gate_exps.weight"], fused[:, :32])
    np.testing.assert_array_equal(got["blk.1.ffn_up_exps.weight"], fused[:, 32:])
    np.testing.assert_array_equal(got["blk.1.ffn_down_exps.weight"],
                                  hf["model.layers.1.block_sparse_moe.output_linear.weight"])
    assert "output.weight" not in got  # tied


@pytest.mark.slow
@pytest.mark.parametrize("arch", ("deepseek_v2", "deepseek_v3"))
def test_deepseek_mla_metadata_and_split_kv_b(family, arch: str) -> None:
    c = family(arch)
    reader = gguf.GGUFReader(c.gguf)
    value = lambda key: gguf_value(reader, f"deepseek2.{key}")  # noqa: E731
    assert value("attention.head_count_kv") == 1  # MLA caches one latent per token, not per head
    assert value("attention.key_length") == 32 + 8 and value("attention.value_length") == 32
    assert value("attention.key_length_mla") == 16 + 8 and value("attention.value_length_mla") == 16
    assert value("attention.kv_lora_rank") == 32
    assert value("rope.dimension_count") == 8
    assert value("leading_dense_block_count") == 1
    assert value("expert_shared_count") == 1
    v3 = arch == "deepseek_v3"
    assert value("attention.q_lora_rank") == (24 if v3 else 0)
    assert value("expert_gating_func") == (2 if v3 else 1)  # sigmoid / softmax
    assert value("expert_weights_norm") is v3
    assert value("expert_weights_scale") == pytest.approx(2.5 if v3 else 1.5)
    assert value("expert_group_count") == (2 if v3 else None)

    got, hf = _tensors(c.gguf), _hf_tensors(c.checkpoint.path)
    kv_b = hf["model.layers.1.self_attn.kv_b_proj.weight"].reshape(4, 16 + 16, 32)
    np.testing.assert_array_equal(got["blk.1.attn_k_b.weight"], kv_b[:, :16].transpose(0, 2, 1))
    np.testing.assert_array_equal(got["blk.1.attn_v_b.weight"], kv_b[:, 16:])
    assert "blk.0.ffn_gate.weight" in got and "blk.0.ffn_gate_inp.weight" not in got  # leading dense layer
    assert got["blk.1.ffn_gate_exps.weight"].shape == (4, 32, 64)
    if v3:
        np.testing.assert_array_equal(got["blk.1.exp_probs_b.bias"],
                                      hf["model.layers.1.mlp.gate.e_score_correction_bias"])
        assert "blk.0.attn_q_a.weight" in got and "blk.0.attn_q.weight" not in got
    else:
        assert "blk.0.attn_q.weight" in got and "blk.1.exp_probs_b.bias" not in got


@pytest.mark.slow
def test_glm_special_tokens_partial_rope_and_moe(family) -> None:
    c = family("glm4moe")
    reader = gguf.GGUFReader(c.gguf)
    value = lambda key: gguf_value(reader, key)  # noqa: E731
    added = c.checkpoint.hf_tokenizer.get_added_vocab()
    assert value("tokenizer.ggml.bos_token_id") == added["[gMASK]"]
    assert value("tokenizer.ggml.eot_token_id") == added["<|user|>"]
    assert value("tokenizer.ggml.eom_token_id") == added["<|observation|>"]
    assert value("tokenizer.ggml.unknown_token_id") == added["<|endoftext|>"]
    assert value("glm4moe.rope.dimension_count") == 16  # half of head_dim 32
    assert value("glm4moe.expert_gating_func") == 2 and value("glm4moe.expert_group_count") == 2
    assert value("glm4moe.leading_dense_block_count") == 1
    got = _tensors(c.gguf)
    assert "blk.0.attn_q.bias" in got and "blk.1.exp_probs_b.bias" in got and "blk.1.attn_k_norm.weight" in got
    assert "blk.0.ffn_gate.weight" in got and "blk.1.ffn_up_shexp.weight" in got


@pytest.mark.slow
def test_lfm2_layer_kinds_and_convolution(family) -> None:
    c = family("lfm2")
    reader = gguf.GGUFReader(c.gguf)
    assert list(gguf_value(reader, "lfm2.attention.head_count_kv")) == [0, 2, 0, 2]  # 0: a convolution layer
    assert gguf_value(reader, "lfm2.shortconv.l_cache") == 3
    assert gguf_value(reader, "lfm2.feed_forward_length") == 96
    got, hf = _tensors(c.gguf), _hf_tensors(c.checkpoint.path)
    np.testing.assert_array_equal(got["blk.0.shortconv.conv.weight"], hf["model.layers.0.conv.conv.weight"][:, 0])
    assert "blk.1.attn_q.weight" in got and "blk.1.shortconv.conv.weight" not in got
    assert "token_embd_norm.weight" in got and "output_norm.weight" not in got


def _refused_with_config(checkpoint: Path, tmp_path: Path, pattern: str, **changes: Any) -> None:
    """A copy of `checkpoint` with config.json `changes` is refused with `pattern`, nothing written."""
    src = tmp_path / "src"
    shutil.copytree(checkpoint, src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, **changes}))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EdgeAIError, match=pattern):
        convert_checkpoint(src, out / "m.gguf")
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_lfm2_layer_types_that_do_not_match_the_tensors_are_named(family, tmp_path: Path) -> None:
    _refused_with_config(family("lfm2").checkpoint.path, tmp_path,
                         r"tensor model\.layers\.1\.self_attn\.\w+\.weight in \S+ is an attention weight but "
                         r"config\.json layer_types makes layer 1 'conv'",
                         layer_types=["conv", "conv", "conv", "full_attention"])  # layer 1 holds attention weights


@pytest.mark.slow
def test_gpt_oss_mxfp4_experts_pass_through_exactly(family, tmp_path: Path) -> None:
    """Released layout (MXFP4 blocks + scales) -> GGUF MXFP4 (not expanded, even for an f16 outtype)
    holding exactly the values of the dequantized layout's f32 GGUF, which matches transformers."""
    c = family("gpt_oss")
    ids = c.checkpoint.encode(PROMPT)
    want = c.checkpoint.model(ids)
    err = relative_error(llama_logits(c.llm, ids), want)
    print(f"gpt-oss MXFP4: max relative logit error {err:.2e}")
    assert err <= MXFP4_TOLERANCE

    dequantized = convert_checkpoint(save_dequantized(c.checkpoint, tmp_path / "deq"), tmp_path / "deq.gguf",
                                     outtype="f32")
    llm = load_llama(dequantized.output)
    try:
        assert_logits_match(type(c)(c.checkpoint, dequantized.output, dequantized, llm), ids, "gpt-oss dequantized")
    finally:
        llm.close()
    f16 = convert_checkpoint(c.checkpoint.path, tmp_path / "f16.gguf", outtype="f16")
    packed = {t.name: t for t in gguf.GGUFReader(f16.output).tensors}
    floats = _tensors(dequantized.output)
    for name in ("blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight", "blk.0.ffn_down_exps.weight"):
        assert packed[name].tensor_type == gguf.GGMLQuantizationType.MXFP4, name
        np.testing.assert_array_equal(gguf.quants.dequantize(packed[name].data, packed[name].tensor_type),
                                      floats[name], err_msg=name)
    assert floats["blk.0.ffn_down_exps.weight"].shape == (4, 64, 96)
    assert f16.output_size < dequantized.output_size / 1.5


@pytest.mark.slow
def test_gpt_oss_yarn_matches_transformers(tmp_path: Path) -> None:
    """YaRN (factor 4 over an original context of 64, a prompt of 100+ tokens) with the ramp ends on whole
    dimensions (truncate=true), as llama.cpp computes it; dequantized experts, so the f32 tolerance holds."""
    from tiny_hf_more import build_more

    ckpt = build_more("gpt_oss", tmp_path / "hf", max_position_embeddings=256, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": True,
        "original_max_position_embeddings": 64})
    report = convert_checkpoint(save_dequantized(ckpt, tmp_path / "deq"), tmp_path / "yarn.gguf", outtype="f32")
    reader = gguf.GGUFReader(report.output)
    assert gguf_value(reader, "gpt-oss.rope.scaling.type") == "yarn"
    assert gguf_value(reader, "gpt-oss.rope.scaling.original_context_length") == 64
    ids = ckpt.encode(" ".join(TEXTS[:9]))
    assert len(ids) > 100
    llm = load_llama(report.output, n_ctx=512)
    try:
        got = llama_logits(llm, ids)
    finally:
        llm.close()
    want = ckpt.model(ids)
    err = relative_error(got, want)
    print(f"gpt-oss YaRN: max relative logit error {err:.2e}")
    assert err <= 1e-3 and (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.slow
def test_gpt_oss_metadata_sinks_and_expert_biases(family) -> None:
    c = family("gpt_oss")
    reader = gguf.GGUFReader(c.gguf)
    assert gguf_value(reader, "general.architecture") == "gpt-oss"
    assert gguf_value(reader, "gpt-oss.attention.sliding_window") == 8
    assert list(gguf_value(reader, "gpt-oss.attention.sliding_window_pattern")) == [True, False]
    assert gguf_value(reader, "gpt-oss.expert_feed_forward_length") == 96
    got, hf = _tensors(c.gguf), _hf_tensors(c.checkpoint.path)
    np.testing.assert_array_equal(got["blk.0.attn_sinks.weight"], hf["model.layers.0.self_attn.sinks"])
    bias = hf["model.layers.1.mlp.experts.gate_up_proj_bias"]  # gate and up interleaved
    np.testing.assert_array_equal(got["blk.1.ffn_gate_exps.bias"], bias[:, 0::2])
    np.testing.assert_array_equal(got["blk.1.ffn_up_exps.bias"], bias[:, 1::2])
    np.testing.assert_array_equal(got["blk.1.ffn_gate_inp.bias"], hf["model.layers.1.mlp.router.bias"])


def _rewrite_shard(src: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(src / "model.safetensors")
    edit(tensors)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.slow
@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda t: t.pop("model.layers.1.mlp.experts.down_proj_scales"),
     r"tensor model\.layers\.1\.mlp\.experts\.down_proj_scales is missing \(found "
     r"model\.layers\.1\.mlp\.experts\.down_proj_blocks"),
    (lambda t: t.update({"model.layers.0.mlp.experts.gate_up_proj_scales":
                         t["model.layers.0.mlp.experts.gate_up_proj_scales"][:, :, :1].copy()}),
     r"tensor model\.layers\.0\.mlp\.experts\.gate_up_proj_scales has shape \[4, 192, 1\] but "
     r"model\.layers\.0\.mlp\.experts\.gate_up_proj_blocks has \[4, 192, 2, 16\]"),
], ids=["missing-scales", "mismatched-scales"])
def test_gpt_oss_bad_mxfp4_is_named_and_nothing_written(family, tmp_path: Path, edit: Any, pattern: str) -> None:
    src = tmp_path / "src"
    shutil.copytree(family("gpt_oss").checkpoint.path, src)
    _rewrite_shard(src, edit)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EdgeAIError, match=pattern):
        convert_checkpoint(src, out / "m.gguf")
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- refusals (config rules, no model needed)

BASE = {"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4}
MLA = {"model_type": "deepseek_v3", "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
       "v_head_dim": 16, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2}


def _warnings(arch: Any, **extra: Any) -> list[str]:
    config = ModelConfig({k: v for k, v in {**BASE, **extra}.items() if v is not None})
    return [w for check in arch.checks for w in check(config)]


@pytest.mark.parametrize(("arch", "extra", "pattern"), [
    (OLMOE, {"num_experts": 4, "num_experts_per_tok": 2, "num_key_value_heads": 2}, "num_key_value_heads 2"),
    (OLMOE, {"num_experts": 4, "num_experts_per_tok": 2, "clip_qkv": 8.0}, "clip_qkv"),
    (OLMOE, {"num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": True}, "unnormalized"),
    (GRANITE_MOE, {"num_local_experts": 2, "num_experts_per_tok": 3}, "more than the 2 experts"),
    (SMOLLM3, {"no_rope_layers": [1, 0, 1, 1]}, r"layer 1 no RoPE"),
    (SMOLLM3, {"no_rope_layers": [1, 1, 1]}, "must list 4 entries"),
    (SMOLLM3, {"no_rope_layer_interval": 2}, r"layer 1 no RoPE"),
    (SMOLLM3, {"mlp_bias": True}, "mlp_bias"),
    (DEEPSEEK2, {**MLA, "qk_head_dim": 32}, "qk_head_dim 32 is not qk_nope_head_dim 16 \\+ qk_rope_head_dim 8"),
    (DEEPSEEK2, {**MLA, "head_dim": 16}, "head_dim 16 differs from qk_rope_head_dim 8"),
    (DEEPSEEK2, {**MLA, "qk_rope_head_dim": 7}, "qk_rope_head_dim 7 is odd"),
    (DEEPSEEK2, {**MLA, "v_head_dim": None}, "no v_head_dim"),
    (DEEPSEEK2, {**MLA, "rope_interleave": False}, "rope_interleave=false"),
    (DEEPSEEK2, {**MLA, "n_shared_experts": 0}, "shared experts"),
    (DEEPSEEK2, {**MLA, "n_group": 3}, "n_group 3 does not divide the 4 experts"),
    (DEEPSEEK2, {**MLA, "first_k_dense_replace": 5}, "first_k_dense_replace is 5"),
    (GLM4_MOE, {"n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1, "n_group": 3},
     "n_group 3 does not divide"),
    (GLM4_MOE, {"n_routed_experts": 4, "num_experts_per_tok": 2}, "no n_shared_experts"),
    (LFM2, {"layer_types": ["conv", "full_attention"]}, "must list 4 entries"),
    (LFM2, {"layer_types": ["conv", "mamba", "conv", "conv"]}, "'mamba'"),
    (LFM2, {"conv_bias": True}, "conv_bias"),
    (GPT_OSS, {"num_local_experts": 4, "num_experts_per_tok": 2, "layer_types": ["sliding_attention"] * 3},
     "must list 4 entries"),
    (GPT_OSS, {"num_local_experts": 4, "num_experts_per_tok": 5}, "more than the 4 experts"),
    (GPT_OSS, {"num_local_experts": 4, "num_experts_per_tok": 2, "tie_word_embeddings": True}, "output matrix"),
])
def test_refuses_what_llama_cpp_would_run_differently(arch: Any, extra: dict[str, Any], pattern: str) -> None:
    with pytest.raises(EdgeAIError, match=pattern):
        _warnings(arch, **extra)


def test_accepts_the_released_configs() -> None:
    assert _warnings(OLMOE, num_experts=64, num_experts_per_tok=8, num_hidden_layers=16) == []
    assert _warnings(GRANITE_MOE, num_local_experts=40, num_experts_per_tok=8) == []
    assert _warnings(SMOLLM3, no_rope_layers=[1, 1, 1, 0]) == []
    assert _warnings(DEEPSEEK2, **MLA, n_group=2, topk_group=1, head_dim=8) == []
    v2 = {**MLA, "model_type": "deepseek_v2", "n_group": 2, "topk_group": 1, "topk_method": "group_limited_greedy"}
    assert any("best two" in w for w in _warnings(DEEPSEEK2, **v2))
    gpt_oss_20b = {"num_local_experts": 32, "num_experts_per_tok": 4, "head_dim": 64, "rope_theta": 150000.0,
                   "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                    "truncate": False, "original_max_position_embeddings": 4096}}
    assert any("dimensions 8.09..17.40 in transformers, 8..18 in llama.cpp" in w
               for w in _warnings(GPT_OSS, **gpt_oss_20b))


@pytest.mark.slow
def test_deepseek_head_dims_that_do_not_match_the_tensors_are_named(family, tmp_path: Path) -> None:
    _refused_with_config(family("deepseek_v2").checkpoint.path, tmp_path,
                         r"tensor model\.layers\.\d\.self_attn\.(kv_b_proj|o_proj)\.weight .*config\.json",
                         v_head_dim=8)  # the weights have 16


@pytest.mark.slow
def test_raw_byte_tensors_outside_gpt_oss_are_refused(checkpoint_copy, tmp_path: Path) -> None:
    """uint8 tensors are read only as gpt-oss's MXFP4 pairs; anywhere else they are named and refused."""
    from safetensors.numpy import load_file, save_file

    src = checkpoint_copy("qwen2")
    name = "model.layers.1.mlp.down_proj.weight"
    shard = src / json.loads((src / "model.safetensors.index.json").read_text())["weight_map"][name]
    tensors = load_file(shard)
    tensors[name] = tensors[name].view(np.uint8)[:, : tensors[name].shape[1]].copy()
    save_file(tensors, shard, metadata={"format": "pt"})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EdgeAIError, match=rf"tensor {name} in {shard.name} is stored as raw bytes"):
        convert_checkpoint(src, out / "m.gguf")
    assert list(out.iterdir()) == []

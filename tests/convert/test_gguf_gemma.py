"""Gemma 2 / Gemma 3 (text, and the text part of Gemma3ForConditionalGeneration) against transformers.

Tolerance: f32 GGUF logits vs transformers float32 logits, every position of a 134-token prompt
(sliding window 8): max|llama - hf| / max|hf| <= 1e-3 (reached: ~2e-4 gemma2, ~1e-4 gemma3).
That is not float32 round-off: llama.cpp's CPU GELU reads an fp16 lookup table. Against a
transformers reference whose GELU is rounded the same way, the median position agrees to ~1e-7
(the remaining outliers are activations that round to the neighbouring fp16 value), which is
what `test_exact_up_to_llama_cpp_gelu_table` checks.
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
from tiny_hf import TEXTS, assert_logits_match, gguf_value, llama_logits
from tiny_hf_more import SLIDING_WINDOW

from convert.gguf import convert_checkpoint
from convert.gguf.archs.gemma import (
    gemma2_checks,
    gemma3_checks,
    layer_types,
    query_scale,
)
from convert.gguf.hparams import DefaultsUnknown, ModelConfig
from edge_ai.errors import EdgeAIError

PROMPT = TEXTS[0] + " " + TEXTS[8] + " " + TEXTS[5]
GEMMAS = ("gemma2", "gemma3", "gemma3_mm")


@pytest.fixture
def gemma(converted_more: Callable[[str], Any]) -> Callable[[str], Any]:
    return converted_more


@pytest.mark.slow
@pytest.mark.parametrize("arch", GEMMAS)
def test_logits_match_transformers(gemma, arch: str) -> None:
    c = gemma(arch)
    ids = c.checkpoint.encode(PROMPT)
    assert len(ids) > 4 * SLIDING_WINDOW  # the sliding window really cuts the context
    assert_logits_match(c, ids, arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ("gemma2", "gemma3"))
def test_exact_up_to_llama_cpp_gelu_table(gemma, arch: str) -> None:
    """With transformers' GELU evaluated like ggml's CPU table (input and output rounded to fp16),
    most positions agree to float32 round-off: every other part of the conversion is exact."""
    import torch
    import torch.nn.functional as F

    class TableGelu(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.gelu(x.half().float(), approximate="tanh").half().float()
            return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))

    c = gemma(arch)
    mlps = [m for m in c.checkpoint.torch_model.modules() if hasattr(m, "act_fn")]
    saved = [m.act_fn for m in mlps]
    ids = c.checkpoint.encode(PROMPT)
    try:
        for m in mlps:
            m.act_fn = TableGelu()
        want = c.checkpoint.model(ids)
    finally:
        for m, act in zip(mlps, saved):
            m.act_fn = act
    got = llama_logits(c.llm, ids)
    per_position = np.abs(got - want).max(-1) / np.abs(want).max()
    print(f"{arch}: median position {np.median(per_position):.1e}, max {per_position.max():.1e}")
    assert np.median(per_position) <= 1e-5
    assert per_position.max() <= 5e-4


@pytest.mark.slow
def test_tokenizer_matches_sentencepiece_and_transformers(gemma) -> None:
    c = gemma("gemma3")
    hf = c.checkpoint.hf_tokenizer
    for text in TEXTS:
        ids = c.llm.tokenize(text.encode(), add_bos=True, special=False)
        assert ids == c.checkpoint.encode(text), text  # sentencepiece, with BOS
        if hf is not None:
            assert ids == hf(text)["input_ids"], text
        assert c.llm.detokenize(ids[1:]).decode() == text
    if hf is not None:
        chat = hf.apply_chat_template([{"role": "user", "content": "Hi there!"},
                                       {"role": "assistant", "content": "Hello, 123."}], tokenize=False)
        assert chat.startswith("<bos><start_of_turn>user\n")
        assert c.llm.tokenize(chat.encode(), add_bos=False, special=True) == hf(chat, add_special_tokens=False)["input_ids"]
    # chat markers marked special in tokenizer_config are CONTROL: never printed, never matched in user text
    marker = c.llm.tokenize(b"<start_of_turn>", add_bos=False, special=True)
    assert len(marker) == 1
    assert c.llm.detokenize(marker) == b""
    assert c.llm.tokenize(b"<start_of_turn>", add_bos=False, special=False) != marker


@pytest.mark.slow
@pytest.mark.parametrize("arch", ("gemma2", "gemma3"))
def test_metadata_and_weights(gemma, arch: str) -> None:
    from safetensors.numpy import load_file

    c = gemma(arch)
    reader = gguf.GGUFReader(c.gguf)
    config = c.checkpoint.config
    tensors = {t.name: t for t in reader.tensors}
    assert c.report.architecture == gguf_value(reader, "general.architecture") == arch
    assert gguf_value(reader, f"{arch}.attention.sliding_window") == SLIDING_WINDOW
    pattern = [t == "sliding_attention" for t in config.layer_types]
    assert gguf_value(reader, f"{arch}.attention.sliding_window_pattern") == pattern
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    # every config.json vocab_size row, the vocabulary padded to it: what llama.cpp's converter writes
    assert tuple(tensors["token_embd.weight"].shape) == (config.hidden_size, config.vocab_size)
    tokens = gguf_value(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == config.vocab_size and tokens[:4] == ["<pad>", "<eos>", "<bos>", "<unk>"]
    assert gguf_value(reader, "tokenizer.ggml.add_bos_token") is True
    assert gguf_value(reader, "tokenizer.ggml.add_space_prefix") is False
    assert gguf_value(reader, "tokenizer.ggml.eos_token_id") == 1
    assert tokens[gguf_value(reader, "tokenizer.ggml.eot_token_id")] == "<end_of_turn>"

    hf = {}
    for shard in c.checkpoint.path.glob("model*.safetensors"):
        hf.update(load_file(shard))
    prefix = "language_model.model." if "language_model.model.norm.weight" in hf else "model."

    def gguf_tensor(name: str) -> np.ndarray:
        data = np.asarray(tensors[name].data)  # numpy order (the reader reverses ggml's ne)
        assert data.shape == tuple(reversed(tensors[name].shape.tolist()))
        return data

    # Gemma's norms are x * (1 + w): stored +1
    for gguf_name, hf_name in (("output_norm", "norm"), ("blk.1.attn_norm", "layers.1.input_layernorm"),
                               ("blk.1.post_attention_norm", "layers.1.post_attention_layernorm"),
                               ("blk.1.ffn_norm", "layers.1.pre_feedforward_layernorm"),
                               ("blk.1.post_ffw_norm", "layers.1.post_feedforward_layernorm")):
        np.testing.assert_allclose(gguf_tensor(gguf_name + ".weight"), hf[f"{prefix}{hf_name}.weight"] + 1, rtol=1e-6)
    factor = np.sqrt(config.head_dim / config.query_pre_attn_scalar)  # folded query scale
    if arch == "gemma2":
        assert gguf_value(reader, "gemma2.attn_logit_softcapping") == pytest.approx(config.attn_logit_softcapping)
        assert gguf_value(reader, "gemma2.final_logit_softcapping") == pytest.approx(config.final_logit_softcapping)
        np.testing.assert_allclose(gguf_tensor("blk.0.attn_q.weight"),
                                   hf[f"{prefix}layers.0.self_attn.q_proj.weight"] * factor, rtol=1e-6)
    else:
        assert gguf_value(reader, "gemma3.rope.freq_base_swa") == 5000.0
        assert gguf_value(reader, "gemma3.rope.freq_base") == 100000.0
        assert gguf_value(reader, "gemma3.rope.scaling.type") == "linear"
        assert gguf_value(reader, "gemma3.attention.key_length") == 32
        assert "gemma3.attn_logit_softcapping" not in reader.fields
        np.testing.assert_allclose(gguf_tensor("blk.0.attn_k_norm.weight"),
                                   hf[f"{prefix}layers.0.self_attn.k_norm.weight"] + 1, rtol=1e-6)
        np.testing.assert_allclose(gguf_tensor("blk.0.attn_q_norm.weight"),
                                   (hf[f"{prefix}layers.0.self_attn.q_norm.weight"] + 1) * factor, rtol=1e-6)
        np.testing.assert_array_equal(gguf_tensor("blk.0.attn_q.weight"), hf[f"{prefix}layers.0.self_attn.q_proj.weight"])


@pytest.mark.slow
def test_added_token_beyond_the_embedding_is_left_out(gemma, tmp_path: Path) -> None:
    """Gemma 3 1B / 270M: the family tokenizer adds <image_soft_token> at id 262144 to an embedding of
    262144 rows. Like llama.cpp, the token is left out (with a warning) and nothing else changes."""
    c = gemma("gemma3")
    src = tmp_path / "src"
    shutil.copytree(c.checkpoint.path, src)
    n_vocab = c.checkpoint.config.vocab_size
    (src / "added_tokens.json").write_text(json.dumps({"<image_soft_token>": n_vocab}))
    tokenizer_config = json.loads((src / "tokenizer_config.json").read_text())
    tokenizer_config["added_tokens_decoder"][str(n_vocab)] = {"content": "<image_soft_token>", "special": True}
    (src / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    report = convert_checkpoint(src, tmp_path / "m.gguf", outtype="f32")
    assert any(w.startswith(f"added token(s) '<image_soft_token>' ({n_vocab}) left out: beyond the model's "
                            f"{n_vocab} embedding rows") for w in report.warnings), report.warnings
    got, want = gguf.GGUFReader(report.output), gguf.GGUFReader(c.gguf)
    assert gguf_value(got, "tokenizer.ggml.tokens") == gguf_value(want, "tokenizer.ggml.tokens")
    assert gguf_value(got, "tokenizer.ggml.token_type") == gguf_value(want, "tokenizer.ggml.token_type")
    for a, b in zip(got.tensors, want.tensors):
        assert a.name == b.name
        np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data), err_msg=a.name)


@pytest.mark.slow
def test_conditional_generation_text_part(gemma, tmp_path: Path) -> None:
    """Gemma3ForConditionalGeneration: the text model only, from the saved layout
    (language_model.model.*, vision_tower.*) and from transformers 5's in-memory one
    (model.language_model.*, model.vision_tower.*): the same GGUF tensors either way."""
    from safetensors.torch import save_file

    c = gemma("gemma3_mm")
    assert c.report.hf_architecture == "Gemma3ForConditionalGeneration" and c.report.architecture == "gemma3"
    assert any("vision tower" in w for w in c.report.warnings)
    names = {t.name for t in gguf.GGUFReader(c.gguf).tensors}
    assert not any(n.startswith(("v.", "mm.")) for n in names) and "blk.2.attn_q_norm.weight" in names

    other = tmp_path / "mm-v5-layout"
    shutil.copytree(c.checkpoint.path, other, ignore=shutil.ignore_patterns("model*.safetensors*"))
    state = {k: v.detach().contiguous() for k, v in c.checkpoint.torch_model.state_dict().items()
             if k != "lm_head.weight"}
    assert any(k.startswith("model.language_model.") for k in state)
    assert any(k.startswith("model.vision_tower.") for k in state)
    save_file(state, other / "model.safetensors", metadata={"format": "pt"})
    report = convert_checkpoint(other, tmp_path / "v5.gguf", outtype="f32")
    a = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(c.gguf).tensors}
    b = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(report.output).tensors}
    assert a.keys() == b.keys()
    for name, value in a.items():
        np.testing.assert_array_equal(value, b[name], err_msg=name)


# ---------------------------------------------------------------- config rules (no model needed)

def _gemma3(**extra: Any) -> ModelConfig:
    return ModelConfig({"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "head_dim": 16,
                        "sliding_window": 8, **extra})


def test_layer_types_from_old_and_new_configs() -> None:
    assert layer_types(_gemma3(), 6) == ["sliding_attention"] * 4
    assert layer_types(_gemma3(sliding_window_pattern=2), 6) == ["sliding_attention", "full_attention"] * 2
    assert layer_types(_gemma3(layer_types=["full_attention"] * 4), 6) == ["full_attention"] * 4
    with pytest.raises(EdgeAIError, match="layer_types"):
        layer_types(_gemma3(layer_types=["full_attention"]), 6)


def test_query_scale_follows_llama_cpp() -> None:
    assert query_scale(62)(_gemma3(query_pre_attn_scalar=16)) == 1.0
    assert query_scale(62)(_gemma3(query_pre_attn_scalar=64)) == pytest.approx(0.5)
    # llama.cpp's 27B sizes use n_embd / n_head (here 5376 / 32 = 168 = Gemma 3 27B's scalar)
    big = ModelConfig({"num_hidden_layers": 62, "hidden_size": 5376, "num_attention_heads": 32, "head_dim": 128,
                       "query_pre_attn_scalar": 168})
    assert query_scale(62)(big) == 1.0
    assert query_scale(62)(_gemma3()) == 1.0  # no scalar: head_dim, as llama.cpp


def test_refusals_and_warnings() -> None:
    assert gemma3_checks(_gemma3()) == []
    with pytest.raises(EdgeAIError, match="attn_logit_softcapping"):
        gemma3_checks(_gemma3(attn_logit_softcapping=50.0))
    with pytest.raises(EdgeAIError, match="no sliding_window"):
        gemma3_checks(_gemma3(sliding_window=None))
    with pytest.raises(EdgeAIError, match="embedding model"):
        gemma3_checks(_gemma3(use_bidirectional_attention=True))
    with pytest.raises(EdgeAIError, match="attention_bias"):
        gemma3_checks(_gemma3(attention_bias=True))
    with pytest.raises(EdgeAIError, match="chunked_attention"):
        gemma3_checks(_gemma3(layer_types=["chunked_attention"] * 4))
    assert any("GELU" in w for w in gemma3_checks(_gemma3(hidden_activation="gelu")))
    assert any("RoPE type 'yarn'" in w for w in gemma3_checks(_gemma3(rope_parameters={
        "full_attention": {"rope_type": "yarn", "factor": 4.0}, "sliding_attention": {"rope_type": "default"}})))
    warnings = gemma2_checks(ModelConfig({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                                          "sliding_window": 8}))
    assert any("attn_logit_softcapping" in w for w in warnings) and any("final_logit" in w for w in warnings)


def test_gemma_class_defaults_are_not_guessed_when_unknown() -> None:
    """Without transformers' Gemma defaults, an omitted rope_theta (Gemma 3: 1e6), sliding_window (4096),
    query_pre_attn_scalar (256) or Gemma 2 soft-cap (50 / 30) would silently change the model: each is
    named in the refusal."""
    unknown = DefaultsUnknown("transformers is not installed", "install the convert extra")
    sparse = {"num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "head_dim": 16}
    config = ModelConfig(sparse, unknown)
    with pytest.raises(EdgeAIError, match="no sliding_window"):
        gemma3_checks(config)
    assert config.omitted == ["query_pre_attn_scalar", "rope_theta", "sliding_window"]
    with pytest.raises(EdgeAIError, match=r"^config\.json omits query_pre_attn_scalar, rope_theta, sliding_window, "
                                          r"and the model's "
                                          r"defaults cannot be read \(transformers is not installed\); install the "
                                          r"convert extra, or add them to config\.json$"):
        config.check_defaults_known()

    given = {**sparse, "sliding_window": 8, "query_pre_attn_scalar": 16, "rope_theta": 1e6}
    gemma2 = ModelConfig(given, unknown)
    gemma2_checks(gemma2)
    assert gemma2.omitted == ["attn_logit_softcapping", "final_logit_softcapping"]
    complete = ModelConfig(given, unknown)
    assert gemma3_checks(complete) == [] and complete.omitted == []
    complete.check_defaults_known()  # nothing needed was omitted: the conversion goes ahead


@pytest.mark.slow
def test_refusal_leaves_nothing(gemma, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(gemma("gemma3").checkpoint.path, src)
    config = json.loads((src / "config.json").read_text())
    config["attn_logit_softcapping"] = 50.0
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EdgeAIError, match="attn_logit_softcapping"):
        convert_checkpoint(src, out / "m.gguf")
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_sparse_official_style_config_gets_transformers_defaults(gemma, tmp_path: Path) -> None:
    """Official Gemma 3 configs omit every text_config field equal to the class default; dropping such
    fields must not change the GGUF (llama.cpp's converter hard-codes these defaults instead)."""
    from transformers import Gemma3TextConfig

    c = gemma("gemma3_mm")
    sparse = tmp_path / "sparse"
    shutil.copytree(c.checkpoint.path, sparse)
    config = json.loads((sparse / "config.json").read_text())
    defaults = Gemma3TextConfig().to_dict()
    dropped = [k for k, v in list(config["text_config"].items())
               if k not in ("model_type", "layer_types") and defaults.get(k, object()) == v]
    for key in dropped:
        del config["text_config"][key]
    assert "rms_norm_eps" in dropped and len(dropped) >= 5
    (sparse / "config.json").write_text(json.dumps(config))
    report = convert_checkpoint(sparse, tmp_path / "sparse.gguf", outtype="f32")

    def fields(path: Path) -> dict[str, Any]:
        reader = gguf.GGUFReader(path)
        return {k: gguf_value(reader, k) for k in reader.fields if not k.startswith(("tokenizer.", "general.name"))}

    assert fields(report.output) == fields(c.gguf)

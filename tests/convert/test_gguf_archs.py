"""End to end, per architecture: tiny random HF checkpoint -> GGUF -> llama.cpp, against transformers.

Tolerance: f32 GGUF logits vs transformers float32 logits, every position of the prompt:
max|llama - hf| / max|hf| <= 1e-3 (reached: ~5e-7 on every architecture here).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from tiny_hf import ARCHS, F32_TOLERANCE, TEXTS, assert_logits_match, relative_error

from convert.gguf import SUPPORTED_ARCHITECTURES
from edge_ai.gguf_file import check_gguf

pytestmark = pytest.mark.slow

PROMPT = TEXTS[0] + " " + TEXTS[8] + " " + TEXTS[5]


def _reader_value(reader: gguf.GGUFReader, key: str):
    field = reader.get_field(key)
    return None if field is None else field.contents()


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(converted, arch: str) -> None:
    c = converted(arch)
    ids = c.checkpoint.encode(PROMPT)
    assert len(ids) > 40
    assert_logits_match(c, ids, arch)


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_matches_reference(converted, arch: str) -> None:
    c = converted(arch)
    for text in TEXTS:
        assert c.llm.tokenize(text.encode(), add_bos=True, special=False) == c.checkpoint.encode(text), text
        # and back: llama.cpp detokenizes its own ids to the text (byte-level BPE and SPM are lossless)
    hf = c.checkpoint.hf_tokenizer
    if hf is not None and c.checkpoint.tokenizer_kind != "spm":
        chat = hf.apply_chat_template([{"role": "user", "content": "Hi there!"},
                                       {"role": "assistant", "content": "Hello, 123."}], tokenize=False)
        want = hf(chat, add_special_tokens=False)["input_ids"]
        assert c.llm.tokenize(chat.encode(), add_bos=False, special=True) == want


def test_spm_tokenizer_matches_transformers(converted) -> None:
    """The SentencePiece path against transformers too (its SPM loader needs protobuf).

    The reference above is sentencepiece itself. transformers 5 rebuilds tokenizer.model as a
    `tokenizers` Metaspace(prepend_scheme="first") pipeline, which skips the dummy-prefix space when
    the text already starts with a space (sentencepiece and llama.cpp add it), so texts that start
    with whitespace are compared with sentencepiece only.
    """
    c = converted("mistral")
    if c.checkpoint.hf_tokenizer is None:
        pytest.skip("transformers cannot read tokenizer.model without protobuf")
    for text in TEXTS:
        if text[:1].isspace():
            continue
        assert c.llm.tokenize(text.encode(), add_bos=True, special=False) == \
            c.checkpoint.hf_tokenizer(text)["input_ids"], text


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata(converted, arch: str) -> None:
    c = converted(arch)
    check_gguf(c.gguf)
    reader = gguf.GGUFReader(c.gguf)
    config = c.checkpoint.config
    tensors = {t.name: t for t in reader.tensors}
    tokens = _reader_value(reader, "tokenizer.ggml.tokens")
    types = _reader_value(reader, "tokenizer.ggml.token_type")

    assert c.report.architecture == _reader_value(reader, "general.architecture")
    assert c.report.hf_architecture in SUPPORTED_ARCHITECTURES
    assert c.report.tensor_count == len(tensors)
    assert c.report.parameter_count == sum(int(np.prod(t.shape)) for t in reader.tensors)
    assert c.report.output_size == c.gguf.stat().st_size
    assert len(tokens) == len(types) == config.vocab_size  # padded to the embedding
    assert tokens[-1] == f"[PAD{config.vocab_size - 1}]" and types[-1] == gguf.TokenType.UNUSED
    assert _reader_value(reader, "tokenizer.chat_template")
    eos = _reader_value(reader, "tokenizer.ggml.eos_token_id")
    assert eos == config.eos_token_id and types[eos] == gguf.TokenType.CONTROL

    if c.checkpoint.tokenizer_kind == "spm":
        assert _reader_value(reader, "tokenizer.ggml.model") == "llama"
        assert _reader_value(reader, "tokenizer.ggml.add_bos_token") is True
        assert types[tokens.index("[INST]")] == gguf.TokenType.USER_DEFINED
        assert types[tokens.index("<0x0A>")] == gguf.TokenType.BYTE
        assert len(_reader_value(reader, "tokenizer.ggml.scores")) == config.vocab_size
    else:
        expected_pre = {"llama3": "llama-bpe", "qwen2": "qwen2", "gpt2": "gpt-2"}[c.checkpoint.tokenizer_kind]
        assert c.report.pre_tokenizer == _reader_value(reader, "tokenizer.ggml.pre") == expected_pre
        assert _reader_value(reader, "tokenizer.ggml.add_bos_token") is (c.checkpoint.tokenizer_kind == "llama3")
        assert _reader_value(reader, "tokenizer.ggml.merges")

    if arch == "llama":
        assert tensors["rope_freqs.weight"].data.shape == (config.head_dim // 2,)
        assert "llama.rope.scaling.type" not in reader.fields
    if arch == "qwen2":  # tied: llama.cpp reuses token_embd
        assert "output.weight" not in tensors and "blk.0.attn_q.bias" in tensors
    else:
        assert "output.weight" in tensors
    if arch == "qwen3":
        assert _reader_value(reader, "qwen3.attention.key_length") == 32
        assert "blk.1.attn_k_norm.weight" in tensors
    if arch == "phi3":
        assert "blk.0.attn_qkv.weight" in tensors and "blk.0.attn_q.weight" not in tensors
        assert tuple(tensors["blk.0.ffn_up.weight"].shape) == (64, 2 * config.intermediate_size)
        assert _reader_value(reader, "phi3.attention.sliding_window") == 0
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)


def test_phi3_longrope(tmp_path) -> None:
    """LongRoPE: rope_factors_long/short tensors + attention factor. llama.cpp picks the factor set by
    context size and transformers by sequence length, so each set is compared where both agree:
    short factors with n_ctx = original context, long factors with n_ctx = 2x and a prompt that long."""
    from tiny_hf import build_checkpoint, llama_logits, load_llama

    from convert.gguf import convert_checkpoint

    rng = np.random.default_rng(1)
    short = [float(x) for x in 1 + rng.random(8)]
    long = [float(x) for x in 1 + 4 * rng.random(8)]
    ckpt = build_checkpoint("phi3", tmp_path / "phi-longrope", max_position_embeddings=1024,
                            original_max_position_embeddings=256,
                            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                             "short_factor": short, "long_factor": long})
    report = convert_checkpoint(ckpt.path, tmp_path / "phi-longrope.gguf", outtype="f32")
    reader = gguf.GGUFReader(report.output)
    tensors = {t.name: t for t in reader.tensors}
    assert np.allclose(tensors["rope_factors_long.weight"].data, long)
    assert np.allclose(tensors["rope_factors_short.weight"].data, short)
    assert _reader_value(reader, "phi3.rope.scaling.original_context_length") == 256
    assert _reader_value(reader, "phi3.rope.scaling.attn_factor") == pytest.approx(
        np.sqrt(1 + np.log(4) / np.log(256)))
    for n_ctx, text in ((256, TEXTS[1]), (512, " ".join(TEXTS * 2))):
        ids = ckpt.encode(text)[:n_ctx]
        llm = load_llama(report.output, n_ctx=n_ctx)
        try:
            err = relative_error(llama_logits(llm, ids), ckpt.model(ids))
        finally:
            llm.close()
        print(f"phi3 longrope, {len(ids)} tokens: max relative logit error {err:.2e}")
        assert err <= F32_TOLERANCE


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
    {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 64},
], ids=["linear", "yarn"])
def test_rope_scaling_metadata(tmp_path, rope) -> None:
    from tiny_hf import build_checkpoint, llama_logits, load_llama

    from convert.gguf import convert_checkpoint

    ckpt = build_checkpoint("qwen2", tmp_path / "q", rope_parameters=rope)
    report = convert_checkpoint(ckpt.path, tmp_path / "q.gguf", outtype="f32")
    reader = gguf.GGUFReader(report.output)
    assert _reader_value(reader, "qwen2.rope.scaling.type") == rope["rope_type"]
    assert _reader_value(reader, "qwen2.rope.scaling.factor") == rope["factor"]
    ids = ckpt.encode(" ".join(TEXTS))[:200]
    llm = load_llama(report.output)
    try:
        err = relative_error(llama_logits(llm, ids), ckpt.model(ids))
    finally:
        llm.close()
    print(f"qwen2 {rope['rope_type']} RoPE scaling: max relative logit error {err:.2e}")
    assert err <= F32_TOLERANCE

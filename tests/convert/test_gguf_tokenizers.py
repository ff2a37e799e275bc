"""Pre-tokenizer inference, the hash fallback, and the SentencePiece model reader."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tiny_hf import TEXTS, train_bpe_tokenizer, train_spm_tokenizer

from convert.gguf import pretokenizer
from convert.gguf.pretokenizer import (
    GPT2_REGEX,
    LLAMA3_REGEX,
    PRE_BY_HASH,
    PRE_BY_SPLITS,
    QWEN2_REGEX,
    infer_pre_tokenizer,
    split_rules,
)
from convert.gguf.spm_model import BYTE, CONTROL, UNKNOWN, USER_DEFINED, read_spm_model
from edge_ai.errors import EdgeAIError

sys.path.insert(0, str(Path(__file__).parents[1]))
from tiny_gguf import write_tiny_llama  # noqa: E402


def test_every_pre_tokenizer_name_loads_in_llama_cpp(tmp_path: Path) -> None:
    """llama.cpp refuses unknown `tokenizer.ggml.pre` names: each one this converter writes must load."""
    import llama_cpp

    for name in sorted(set(PRE_BY_SPLITS.values()) | set(PRE_BY_HASH.values())):
        path = write_tiny_llama(tmp_path / f"{name}.gguf", extra_metadata={"tokenizer.ggml.pre": name})
        llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        llm.close()
    with pytest.raises(ValueError):
        llama_cpp.Llama(str(write_tiny_llama(tmp_path / "bad.gguf",
                                             extra_metadata={"tokenizer.ggml.pre": "no-such-pre"})),
                        vocab_only=True, verbose=False)


def _seq(*steps: dict) -> dict:
    return {"normalizer": None, "pre_tokenizer": {"type": "Sequence", "pretokenizers": list(steps)}}


def _split(regex: str, **kw) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False, **kw}


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


def test_split_rules_shapes() -> None:
    gpt2 = {"normalizer": None, "pre_tokenizer": {**BYTE_LEVEL, "use_regex": True}}
    assert split_rules(gpt2) == (GPT2_REGEX,)
    assert split_rules(_seq(_split(LLAMA3_REGEX), BYTE_LEVEL)) == (LLAMA3_REGEX,)
    assert split_rules({**_seq(_split(QWEN2_REGEX), BYTE_LEVEL), "normalizer": {"type": "NFC"}}) == (QWEN2_REGEX,)
    assert split_rules(_seq({"type": "Digits", "individual_digits": True}, {**BYTE_LEVEL, "use_regex": True})) \
        == (r"\p{N}", GPT2_REGEX)
    # shapes that cannot be read safely
    assert split_rules({"normalizer": None, "pre_tokenizer": {**BYTE_LEVEL, "add_prefix_space": True}}) is None
    assert split_rules({**_seq(_split(LLAMA3_REGEX), BYTE_LEVEL), "normalizer": {"type": "Lowercase"}}) is None
    assert split_rules(_seq(_split(LLAMA3_REGEX, behavior="Removed"), BYTE_LEVEL)) is None
    assert split_rules(_seq(_split(LLAMA3_REGEX))) is None  # no ByteLevel at the end
    assert split_rules({"normalizer": None, "pre_tokenizer": {"type": "Metaspace"}}) is None


@pytest.mark.slow
def test_smollm_digits_pre_tokenizer_end_to_end(converted) -> None:
    """A Digits + ByteLevel tokenizer is inferred as llama.cpp's "smollm" and tokenizes identically."""
    c = converted("qwen2", "smollm")
    assert c.report.pre_tokenizer == "smollm"
    for text in TEXTS:
        assert c.llm.tokenize(text.encode(), add_bos=True, special=False) == c.checkpoint.encode(text), text


def test_hash_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_bpe_tokenizer("qwen2", tmp_path)
    tj = json.loads((tmp_path / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] += "|x"  # unreadable rules...
    digest = pretokenizer.token_hash(tmp_path / "tokenizer.json")
    assert digest is not None and len(digest) == 64
    assert infer_pre_tokenizer(tj, tmp_path / "tokenizer.json")[0] is None
    monkeypatch.setitem(PRE_BY_HASH, digest, "qwen2")  # ...but a known token hash
    assert infer_pre_tokenizer(tj, tmp_path / "tokenizer.json") == ("qwen2", "token hash")


def test_chktxt_is_llama_cpp_text() -> None:
    assert pretokenizer.CHKTXT.startswith("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️")
    assert pretokenizer.CHKTXT.endswith("'D you like some tea? We'Ve a'lL")


def test_spm_model_reader_matches_sentencepiece(tmp_path: Path) -> None:
    sp = train_spm_tokenizer(tmp_path)
    model = read_spm_model(tmp_path / "tokenizer.model")
    assert len(model.pieces) == sp.vocab_size()
    for i in range(sp.vocab_size()):
        assert model.pieces[i] == sp.id_to_piece(i)
        assert model.scores[i] == pytest.approx(sp.get_score(i))
        assert (model.types[i] == UNKNOWN) == sp.is_unknown(i)
        assert (model.types[i] == CONTROL) == sp.is_control(i)
        assert (model.types[i] == BYTE) == sp.is_byte(i)
    assert model.types[sp.piece_to_id("[INST]")] == USER_DEFINED
    assert (model.unk_id, model.bos_id, model.eos_id, model.pad_id) == (sp.unk_id(), sp.bos_id(), sp.eos_id(),
                                                                          sp.pad_id())
    assert model.model_type == 2 and model.byte_fallback
    assert model.add_dummy_prefix and not model.remove_extra_whitespaces
    assert model.normalizer_name == "identity"


def test_spm_model_reader_refuses_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.model"
    for data in (b"", b"\x0a\x05abc", b"\xff" * 20, b"\x0a\x02\x0a\xff"):
        bad.write_bytes(data)
        with pytest.raises(EdgeAIError, match="is not a valid SentencePiece model"):
            read_spm_model(bad)

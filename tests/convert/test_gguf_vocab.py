"""Where the converter takes the chat template and the add-BOS flag from, when the files disagree.

Chat template: chat_template.jinja, else tokenizer_config.json, else chat_template.json (transformers'
order: a model updated with a new .jinja often keeps the stale template in its config).
Add BOS: tokenizer_config.json's add_bos_token, else tokenizer.json's post-processor, else (only
SentencePiece) true; as llama.cpp's converter and transformers 4's Llama/Gemma tokenizers do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tiny_hf import BPE_SPECIALS, CHAT_TEMPLATES, train_bpe_tokenizer, train_spm_tokenizer

from convert.gguf import convert_checkpoint
from convert.gguf.hparams import ModelConfig
from convert.gguf.vocab import Vocabulary, load_vocabulary
from edge_ai.errors import EdgeAIError

N_VOCAB = 1024  # room for the ~700 BPE / ~600 SentencePiece tokens


def _vocab(src: Path) -> Vocabulary:
    return load_vocabulary(src, ModelConfig({}), N_VOCAB)


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def _llama_cpp_vocab(path: Path) -> Any:
    import llama_cpp

    return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


def test_chat_template_sources_and_precedence(tmp_path: Path) -> None:
    src = tmp_path / "tok"
    train_bpe_tokenizer("qwen2", src)
    jinja, config = src / "chat_template.jinja", src / "tokenizer_config.json"
    assert jinja.read_text() == CHAT_TEMPLATES["qwen2"] and "chat_template" not in json.loads(config.read_text())
    assert _vocab(src).chat_template == CHAT_TEMPLATES["qwen2"]  # transformers 5 saves it as a .jinja

    _edit_json(config, chat_template="{{ 'from the config' }}")
    assert _vocab(src).chat_template == CHAT_TEMPLATES["qwen2"]  # the .jinja wins over the config
    jinja.unlink()
    assert _vocab(src).chat_template == "{{ 'from the config' }}"

    (src / "chat_template.json").write_text(json.dumps({"chat_template": "{{ 'from the processor' }}"}))
    assert _vocab(src).chat_template == "{{ 'from the config' }}"  # the config wins over chat_template.json
    _edit_json(config, chat_template=None)
    assert _vocab(src).chat_template == "{{ 'from the processor' }}"

    named = [{"name": "default", "template": "{{ 'a' }}"}, {"name": "tool_use", "template": "{{ 'b' }}"}]
    _edit_json(config, chat_template=named)
    assert _vocab(src).chat_template == named
    (src / "chat_template.json").unlink()
    _edit_json(config, chat_template="  \n")
    assert _vocab(src).chat_template is None  # blank: no template rather than an empty one


def test_add_bos_precedence(tmp_path: Path) -> None:
    llama3 = tmp_path / "llama3"
    train_bpe_tokenizer("llama3", llama3)  # post-processor: <|begin_of_text|> $A
    vocab = _vocab(llama3)
    assert vocab.add_bos is True and vocab.tokens[vocab.special["bos"]] == BPE_SPECIALS["llama3"][0]
    _edit_json(llama3 / "tokenizer_config.json", add_bos_token=False)
    assert _vocab(llama3).add_bos is False  # the config overrides the post-processor

    qwen2 = tmp_path / "qwen2"
    train_bpe_tokenizer("qwen2", qwen2)  # ByteLevel post-processor: adds nothing
    assert _vocab(qwen2).add_bos is False
    _edit_json(qwen2 / "tokenizer_config.json", add_bos_token=True, bos_token="<|endoftext|>")
    vocab = _vocab(qwen2)
    assert vocab.add_bos is True and vocab.tokens[vocab.special["bos"]] == "<|endoftext|>"

    spm = tmp_path / "spm"
    train_spm_tokenizer(spm)  # no tokenizer.json: SentencePiece adds BOS unless told otherwise
    assert _vocab(spm).add_bos is True
    _edit_json(spm / "tokenizer_config.json", add_bos_token=False)
    assert _vocab(spm).add_bos is False
    _edit_json(spm / "tokenizer_config.json", add_bos_token=None)
    assert _vocab(spm).add_bos is True


@pytest.mark.slow
def test_template_and_add_bos_reach_llama_cpp(checkpoint_copy, tmp_path: Path) -> None:
    """End to end: what the files say is what llama.cpp reads from the converted GGUF."""
    src = checkpoint_copy("llama")  # llama3 tokenizer: the post-processor adds <|begin_of_text|>
    _edit_json(src / "tokenizer_config.json", add_bos_token=False, chat_template="{{ 'stale' }}")
    report = convert_checkpoint(src, tmp_path / "m.gguf", outtype="f16")
    llm = _llama_cpp_vocab(report.output)
    try:
        assert llm.metadata["tokenizer.chat_template"] == CHAT_TEMPLATES["llama3"]
        assert llm.metadata["tokenizer.ggml.add_bos_token"] == "false"
        bos = llm.token_bos()
        assert llm.tokenize(b"hello", add_bos=True)[0] != bos
    finally:
        llm.close()

    _edit_json(src / "tokenizer_config.json", add_bos_token=None)
    report = convert_checkpoint(src, tmp_path / "m2.gguf", outtype="f16")
    llm = _llama_cpp_vocab(report.output)
    try:
        assert llm.metadata["tokenizer.ggml.add_bos_token"] == "true"
        assert llm.tokenize(b"hello", add_bos=True)[0] == bos
    finally:
        llm.close()


def test_a_metaspace_bpe_tokenizer_json_falls_back_to_tokenizer_model(tmp_path: Path) -> None:
    """Some SentencePiece exports write a BPE tokenizer.json without byte fallback and without
    ByteLevel (Metaspace): not GPT-2 style, so the tokenizer.model beside it is what converts."""
    src = tmp_path / "tok"
    train_spm_tokenizer(src)
    want = _vocab(src)
    (src / "tokenizer.json").write_text(json.dumps({
        "model": {"type": "BPE", "byte_fallback": False, "vocab": {"▁a": 0, "b": 1}, "merges": []},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace"}, {"type": "Fuse"}]},
    }))
    got = _vocab(src)
    assert got.model == "llama" and got.tokens == want.tokens and got.types == want.types
    (src / "tokenizer.model").unlink()
    with pytest.raises(EdgeAIError, match="unknown BPE pre-tokenizer"):
        _vocab(src)  # without tokenizer.model it is not mistaken for a usable byte-level BPE

"""Tiny random Hugging Face checkpoints with locally trained tokenizers, for converter tests.

    ckpt = build_checkpoint("qwen2", tmp_path / "qwen2")    # config + shards + tokenizer files
    ckpt.model(ids) -> float32 logits [n, vocab] from transformers (the reference)
    ckpt.encode(text) -> ids from the reference tokenizer (HF, or sentencepiece for SPM)

Every architecture is a 2-block, width-64 model (4 query / 2 KV heads) with every parameter
re-randomised (norm weights near 1, biases non-zero) so a mis-mapped tensor cannot hide, saved
in float32 safetensors split into several shards with an index. Tokenizers are trained in
milliseconds on `CORPUS` with `tokenizers` (byte-level BPE with a GPT-2, Llama-3 or Qwen2 style
pre-tokenizer) or `sentencepiece` (BPE with byte fallback, like Llama 2 / Mistral).
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.gguf.pretokenizer import LLAMA3_REGEX, QWEN2_REGEX

CORPUS_LINES = [
    "The quick brown fox jumps over the lazy dog. I've been told he's there, we'd like some tea!",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 123 2024 3.14159 1,000,000 -7 1e-5",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < 10; i++) { printf(\"%d\\n\", i); }  // C code",
    "Grüße aus Köln! Ça va très bien, merci. ¿Dónde está la biblioteca?",
    "日本語のテキストです。中文文本。한국어 텍스트.",
    "Русский текст и немного български думи. Ελληνικά γράμματα.",
    "Emoji: 🚀 🦙 ✅ 😀 — dashes – and “quotes” «guillemets»",
    "    indented line\n\ttabbed line\n\n\nmultiple newlines\r\nwindows line",
    "HTTP/1.1 200 OK\nContent-Type: application/json\n{\"key\": [1, 2, 3], \"ok\": true}",
    "snake_case_name CamelCaseName kebab-case-name ALLCAPS mixedCase",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G",
]
CORPUS = CORPUS_LINES * 20

# Varied text for tokenizer parity: unicode, digits, whitespace runs, punctuation, code, unseen words.
TEXTS = [
    "Hello world! How are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing spaces   ",
    "runs    of     spaces\tand\t\ttabs\n\nand\n\n\nnewlines\r\nCRLF",
    "Numbers: 1 12 123 1234 12345 123456 3.14159 -42 1e10 0x1F 2,500.00",
    "Unicode: naïve café, Grüße, 日本語のテキスト, 한국어, Ελληνικά, русский текст",
    "Emoji 🚀🦙😶‍🌫️ ✅ and symbols © ® ™ € £ ¥ ∑ ∞ ≠",
    "Punctuation!!! ??? ... --- === ''' \"\"\" ``` (brackets) [square] {curly} <angle>",
    "def f(x):\n    return x ** 2  # square\n\nfor i in range(10):\n\tprint(f'{i}: {f(i)}')",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like tea? We'Ve a'lL",
    "mixedCASE Words AND ALLCAPS, snake_case, kebab-case, CamelCase, xmlHTTPRequest",
    "URL https://example.com/path?q=1&r=two#frag email first.last@example.org",
    "zxqv unseen wordz qwertyuiop",
    " ",
    "\n",
    "a",
]


@dataclass
class TinyCheckpoint:
    path: Path
    arch: str
    tokenizer_kind: str
    model: Callable[[list[int]], np.ndarray]
    encode: Callable[[str], list[int]]
    hf_tokenizer: Any | None
    config: Any


# ---------------------------------------------------------------- tokenizers

BPE_SPECIALS = {
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "gpt2": ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"],
    "smollm": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
}
CHAT_TEMPLATES = {
    "llama3": "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
              "{{ m['content'] }}<|eot_id|>{% endfor %}",
    "qwen2": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}",
    "gpt2": "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}",
    "smollm": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}",
}


def byte_level_pre_tokenizer(kind: str) -> Any:
    from tokenizers import Regex, pre_tokenizers

    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    regex = {"llama3": LLAMA3_REGEX, "qwen2": QWEN2_REGEX}[kind]
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])


def train_bpe_tokenizer(kind: str, out: Path, *, vocab_size: int = 700) -> Any:
    """Train a byte-level BPE tokenizer, save it HF-style into `out`; returns the HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = BPE_SPECIALS[kind]
    tok = Tokenizer(models.BPE(ignore_merges=kind == "llama3"))
    tok.pre_tokenizer = byte_level_pre_tokenizer(kind)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if kind == "llama3":
        bos = specials[0]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
        names = {"bos_token": bos, "eos_token": "<|eot_id|>"}
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        names = {"eos_token": "<|im_end|>" if kind in ("qwen2", "smollm") else "<|end|>",
                 "pad_token": "<|endoftext|>"}
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    hf.chat_template = CHAT_TEMPLATES[kind]
    hf.save_pretrained(out)
    return hf


def train_spm_tokenizer(out: Path, *, vocab_size: int = 600) -> Any:
    """Train a Llama-2-style SentencePiece BPE model into out/tokenizer.model; returns the processor."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=["[INST]", "[/INST]"],
        hard_vocab_limit=False, minloglevel=2, num_threads=1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": True,
        "chat_template": "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}",
    }))
    return spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))


def hf_spm_tokenizer(out: Path) -> Any | None:
    """transformers' tokenizer for a tokenizer.model folder (needs protobuf), or None."""
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        return None
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(out)


# ---------------------------------------------------------------- models

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "phi3")
TOKENIZER_OF_ARCH = {"llama": "llama3", "mistral": "spm", "qwen2": "qwen2", "qwen3": "qwen2", "phi3": "gpt2"}

BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)

ARCH_CONFIG: dict[str, dict[str, Any]] = {
    # Llama-3.1 RoPE scaling with a tiny original context so all three frequency bands occur.
    "llama": dict(rms_norm_eps=1e-5, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "mistral": dict(rms_norm_eps=1e-5, sliding_window=None, rope_parameters={"rope_type": "default",
                                                                             "rope_theta": 1000000.0}),
    "qwen2": dict(rms_norm_eps=1e-6, tie_word_embeddings=True, rope_parameters={"rope_type": "default",
                                                                                "rope_theta": 1000000.0}),
    "qwen3": dict(rms_norm_eps=1e-6, head_dim=32, rope_parameters={"rope_type": "default",
                                                                    "rope_theta": 1000000.0}),
    "phi3": dict(rms_norm_eps=1e-5, sliding_window=None, rope_parameters={"rope_type": "default",
                                                                          "rope_theta": 10000.0}),
}


def _config_class(arch: str) -> Any:
    import transformers

    return {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
            "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
            "phi3": transformers.Phi3Config}[arch]


def legacy_rope(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with transformers 5's `rope_parameters` turned into the `rope_theta` + `rope_scaling`
    (+ Gemma 3's `rope_local_base_freq`) that the toolchain's transformers 4.57 takes (it silently
    ignores `rope_parameters`). The checkpoints keep the 4.57 form; the converter reads both."""
    params = settings.get("rope_parameters")
    if params is None:
        return settings
    settings = {k: v for k, v in settings.items() if k != "rope_parameters"}
    if "full_attention" in params:  # Gemma 3: one set per attention type
        if "sliding_attention" in params:
            settings["rope_local_base_freq"] = params["sliding_attention"]["rope_theta"]
        params = params["full_attention"]
    params = dict(params)
    settings["rope_theta"] = params.pop("rope_theta")
    kind = params.pop("rope_type", "default")
    settings["rope_scaling"] = None if kind == "default" else {"type": kind, **params}  # Phi-3 reads only "type"
    return settings


def randomize_(model: Any, seed: int) -> None:
    """Give every parameter a distinctive random value (HF init leaves norms at 1 and biases at 0)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embed" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)


def build_checkpoint(arch: str, out: Path, *, seed: int = 0, shard_size: str = "150KB",
                     tokenizer_kind: str | None = None, dtype: str = "float32",
                     **config_overrides: Any) -> TinyCheckpoint:
    """Write a tiny random `arch` checkpoint + tokenizer into `out` and return handles to the reference."""
    import torch
    from transformers import AutoModelForCausalLM

    kind = tokenizer_kind or TOKENIZER_OF_ARCH[arch]
    out.mkdir(parents=True, exist_ok=True)
    if kind == "spm":
        sp = train_spm_tokenizer(out)
        hf_tok = hf_spm_tokenizer(out)
        n_tokens, bos, eos, pad = sp.vocab_size(), sp.bos_id(), sp.eos_id(), None

        def encode(text: str) -> list[int]:
            return [bos, *sp.encode(text)]
    else:
        hf_tok = train_bpe_tokenizer(kind, out)
        n_tokens = len(hf_tok)
        bos, eos, pad = hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id

        def encode(text: str) -> list[int]:
            return list(hf_tok(text)["input_ids"])

    vocab_size = -(-(n_tokens + 5) // 64) * 64  # padded, as real models are
    settings = {**BASE, **ARCH_CONFIG[arch], **config_overrides, "vocab_size": vocab_size,
                "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}
    config = _config_class(arch)(**legacy_rope(settings))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    randomize_(model, seed)
    model.eval()
    save_dtype = getattr(torch, dtype)
    if save_dtype == torch.float32:
        model.save_pretrained(out, max_shard_size=shard_size)
    else:  # save a rounded copy; the reference gets the same rounded weights (but exact RoPE buffers)
        copy.deepcopy(model).to(save_dtype).save_pretrained(out, max_shard_size=shard_size)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(save_dtype).to(torch.float32))

    def logits(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].float().numpy()

    return TinyCheckpoint(path=out, arch=arch, tokenizer_kind=kind, model=logits, encode=encode,
                          hf_tokenizer=hf_tok, config=config)


# ---------------------------------------------------------------- llama.cpp side

def load_llama(path: Path, *, n_ctx: int = 256) -> Any:
    """The GGUF in llama-cpp-python with all-position logits and an F32 KV cache (f16 noise hides bugs)."""
    import llama_cpp

    return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=2, logits_all=True,
                           type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False)


def llama_logits(llm: Any, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| over every position and vocabulary entry."""
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def gguf_value(reader: Any, key: str) -> Any:
    """A metadata value read back with gguf-py's GGUFReader (None when absent)."""
    field = reader.get_field(key)
    return None if field is None else field.contents()


F32_TOLERANCE = 1e-3  # max |llama.cpp - transformers| / max |transformers| for an f32 GGUF


def assert_logits_match(converted: Any, ids: list[int], label: str) -> float:
    """llama.cpp's logits at every position equal transformers' within F32_TOLERANCE, same argmax;
    returns the relative error reached."""
    want = converted.checkpoint.model(ids)
    got = llama_logits(converted.llm, ids)
    assert got.shape == want.shape
    err = relative_error(got, want)
    print(f"{label}: f32 max relative logit error {err:.2e} over {len(ids)} positions")
    assert err <= F32_TOLERANCE
    assert (got.argmax(-1) == want.argmax(-1)).all()
    return err


def _prompt_and_generation(path: Path, prompt: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A GGUF's logits at every prompt position, and at 3 greedily generated tokens after it."""
    llm = load_llama(path, n_ctx=64)
    try:
        ids = llm.tokenize(prompt)
        llm.eval(ids)
        for _ in range(3):
            llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
        scores = np.array(llm.scores[: llm.n_tokens], dtype=np.float32)
        return scores[: len(ids)], scores[len(ids):]
    finally:
        llm.close()


def assert_runs_like(quantized: Path, source: Path, min_correlation: float,
                     prompt: bytes = b"The capital of France is Paris, and the capital of Italy is Rome.") -> float:
    """A quantized GGUF loads in llama.cpp, generates with finite logits, and its logits on `prompt`
    follow the source model's: correlation over every position and vocabulary entry at least
    `min_correlation` (a mangled tensor gives ~0). Returns the correlation."""
    got, generated = _prompt_and_generation(quantized, prompt)
    want, _ = _prompt_and_generation(source, prompt)
    assert np.isfinite(got).all() and np.isfinite(generated).all()
    correlation = float(np.corrcoef(got.ravel(), want.ravel())[0, 1])
    print(f"{quantized.name}: logits correlation with {source.name} {correlation:.3f}")
    assert correlation >= min_correlation
    return correlation

"""Write a tiny but real GGUF model that llama.cpp loads and runs (random weights, ~0.4 MB).

A "llama"-architecture model with 2 blocks, width 64, 4 query heads / 2 KV heads and a byte-level
BPE vocabulary (GPT-2 style: 256 byte tokens, a few merges, ChatML control tokens). It generates
gibberish, but exercises the whole load -> template -> tokenize -> decode path in milliseconds.

    path = write_tiny_llama(tmp_path / "tiny.gguf", chat_template="...",
                            extra_metadata={"llama.attention.layer_norm_rms_epsilon": float("nan")})

The default widths are tiny; pass `n_embd=256, n_ff=512` for rows that k-quants and i-quants can
quantize (their blocks hold 256 values; narrower rows fall back to 32-value types).

`leave_out` names tensors not to write (a model llama.cpp refuses with only a log line saying why).

`extra_metadata` entries are written after (and replace) the defaults. A plain value gets its GGUF
type from its Python type (str -> STRING, bool -> BOOL, int -> UINT32, float -> FLOAT32, list ->
ARRAY of the first item's type); pass `(value, gguf.GGUFValueType.X)` to force a type (e.g. a wrong
one), or `(value, ARRAY, element_type)` for a typed array.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGUFValueType as T

N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = N_EMBD // N_HEAD
N_FF = 128
N_LAYER = 2
CONTEXT_LENGTH = 512

CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_MERGES = (("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"))


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for each byte value 0..255, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of the tiny byte-level BPE tokenizer."""
    tokens = _bytes_to_unicode()
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for left, right in _MERGES:
        tokens.append(left + right)
        types.append(gguf.TokenType.NORMAL)
    tokens += CONTROL_TOKENS
    types += [gguf.TokenType.CONTROL] * len(CONTROL_TOKENS)
    return tokens, [int(t) for t in types], [f"{left} {right}" for left, right in _MERGES]


def _typed(value: Any) -> tuple[Any, ...]:
    """(value, GGUF type[, element type]) for a plain Python value or an explicit tuple."""
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return (value, T.ARRAY, _typed(value[0])[1] if value else T.UINT32)
    if isinstance(value, bool):
        return (value, T.BOOL)
    if isinstance(value, int):
        return (value, T.UINT32)
    if isinstance(value, float):
        return (value, T.FLOAT32)
    if isinstance(value, str):
        return (value, T.STRING)
    raise TypeError(f"cannot infer a GGUF type for {value!r}; pass (value, GGUFValueType.X)")


def write_tiny_llama(path: Path, *, chat_template: str | None = None,
                     extra_metadata: dict[str, Any] | None = None, seed: int = 0,
                     n_embd: int = N_EMBD, n_ff: int = N_FF, n_layer: int = N_LAYER,
                     leave_out: Collection[str] = ()) -> Path:
    """Write the tiny model to `path` and return `path`."""
    arch = "llama"
    head_dim = n_embd // N_HEAD
    tokens, token_types, merges = vocabulary()
    n_vocab = len(tokens)
    metadata: dict[str, tuple[Any, ...]] = {
        "general.name": ("tiny-llama", T.STRING),
        f"{arch}.context_length": (CONTEXT_LENGTH, T.UINT32),
        f"{arch}.embedding_length": (n_embd, T.UINT32),
        f"{arch}.block_count": (n_layer, T.UINT32),
        f"{arch}.feed_forward_length": (n_ff, T.UINT32),
        f"{arch}.attention.head_count": (N_HEAD, T.UINT32),
        f"{arch}.attention.head_count_kv": (N_HEAD_KV, T.UINT32),
        f"{arch}.attention.layer_norm_rms_epsilon": (1e-5, T.FLOAT32),
        f"{arch}.rope.dimension_count": (head_dim, T.UINT32),
        f"{arch}.rope.freq_base": (10000.0, T.FLOAT32),
        f"{arch}.vocab_size": (n_vocab, T.UINT32),
        "general.file_type": (int(gguf.LlamaFileType.ALL_F32), T.UINT32),
        "tokenizer.ggml.model": ("gpt2", T.STRING),
        "tokenizer.ggml.pre": ("default", T.STRING),
        "tokenizer.ggml.tokens": (tokens, T.ARRAY, T.STRING),
        "tokenizer.ggml.token_type": (token_types, T.ARRAY, T.INT32),
        "tokenizer.ggml.merges": (merges, T.ARRAY, T.STRING),
        "tokenizer.ggml.bos_token_id": (tokens.index("<|endoftext|>"), T.UINT32),
        "tokenizer.ggml.eos_token_id": (tokens.index("<|im_end|>"), T.UINT32),
        "tokenizer.ggml.add_bos_token": (False, T.BOOL),
    }
    if chat_template is not None:
        metadata["tokenizer.chat_template"] = (chat_template, T.STRING)
    for key, value in (extra_metadata or {}).items():
        metadata[key] = _typed(value)

    writer = gguf.GGUFWriter(path, arch)
    for key, typed in metadata.items():
        writer.add_key_value(key, *typed)
    # numpy shape (out, in) is stored as ggml ne (in, out), which is what llama.cpp checks.
    rng = np.random.default_rng(seed)

    def add(name: str, array: np.ndarray) -> None:
        if name not in leave_out:
            writer.add_tensor(name, array)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(n_embd, dtype=np.float32)

    add("token_embd.weight", weight(n_vocab, n_embd))
    for i in range(n_layer):
        add(f"blk.{i}.attn_norm.weight", norm())
        add(f"blk.{i}.attn_q.weight", weight(N_HEAD * head_dim, n_embd))
        add(f"blk.{i}.attn_k.weight", weight(N_HEAD_KV * head_dim, n_embd))
        add(f"blk.{i}.attn_v.weight", weight(N_HEAD_KV * head_dim, n_embd))
        add(f"blk.{i}.attn_output.weight", weight(n_embd, N_HEAD * head_dim))
        add(f"blk.{i}.ffn_norm.weight", norm())
        add(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        add(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        add(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    add("output_norm.weight", norm())
    add("output.weight", weight(n_vocab, n_embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

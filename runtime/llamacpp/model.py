"""What callers need from a loaded model beyond `Llama`'s public methods: token pieces, BOS and
end-of-generation, model flags, the KV memory, logits in place, and batches for llama_decode.

Per-token calls take handles looked up once (`vocab(llm)`), so the engine's decode loop costs
no more than llama-cpp-python's own.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama

__all__ = ["Batch", "Llama", "Memory", "adds_bos", "bos_to_insert", "is_eog", "is_recurrent", "last_logits",
           "logits", "n_swa", "token_bytes", "token_text", "vocab"]

Vocab = Any  # a llama_vocab * (ctypes pointer)


def vocab(llm: Llama) -> Vocab:
    """The model's llama_vocab handle, for the per-token calls below."""
    return llama_cpp.llama_model_get_vocab(llm.model)


def token_bytes(vocab: Vocab, token: int) -> bytes:
    """The token's text bytes. llama-cpp-python's detokenize uses a 32-byte buffer and silently
    drops longer pieces (Gemma has hundreds, e.g. whole Bengali words), so size it ourselves."""
    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        if n >= 0:
            return buffer.raw[:n]
        size = -n


def token_text(llm: Llama, token: int) -> str:
    """The vocabulary's text of `token` as stored (special tokens spelled out), "" for none (< 0)."""
    return llm._model.token_get_text(token) if token >= 0 else ""


def is_eog(vocab: Vocab, token: int) -> bool:
    """Whether `token` ends generation (EOS, EOT and the model's other end-of-generation tokens)."""
    return bool(llama_cpp.llama_vocab_is_eog(vocab, token))


def adds_bos(llm: Llama) -> bool:
    """Whether the model wants a BOS token at the start of a prompt."""
    return bool(llm._model.add_bos_token())


def bos_to_insert(vocab: Vocab) -> int | None:
    """The BOS token a chunk should start with, or None when the model adds no BOS."""
    return int(llama_cpp.llama_vocab_bos(vocab)) if llama_cpp.llama_vocab_get_add_bos(vocab) else None


def n_swa(llm: Llama) -> int:
    """The sliding-window size of the model's SWA layers (0: none)."""
    return int(llama_cpp.llama_model_n_swa(llm.model))


def is_recurrent(llm: Llama) -> bool:
    """Recurrent or hybrid (Mamba-style state): the cache can only be extended, never rewound."""
    return bool(llama_cpp.llama_model_is_recurrent(llm.model) or llama_cpp.llama_model_is_hybrid(llm.model))


class Memory:
    """The context's KV memory (llama_memory_*), sequence 0 unless told."""

    def __init__(self, ctx: Any) -> None:
        self._memory = llama_cpp.llama_get_memory(ctx)

    @property
    def can_shift(self) -> bool:
        """Whether positions can be moved (llama.cpp's context shift); not for SWA or recurrent caches."""
        return bool(llama_cpp.llama_memory_can_shift(self._memory))

    def pos_min(self, seq: int = 0) -> int:
        """The smallest position still held for `seq` (-1: empty)."""
        return int(llama_cpp.llama_memory_seq_pos_min(self._memory, seq))

    def move(self, start: int, end: int, to: int, seq: int = 0) -> None:
        """Drop positions [to, start) and move [start, end) (end -1: to the last) back to `to`."""
        llama_cpp.llama_memory_seq_rm(self._memory, seq, to, start)
        llama_cpp.llama_memory_seq_add(self._memory, seq, start, end, to - start)

    def truncate(self, pos: int, seq: int = 0) -> None:
        """Drop positions `pos` and after."""
        llama_cpp.llama_memory_seq_rm(self._memory, seq, pos, -1)

    def clear(self) -> None:
        """Empty every sequence, data included."""
        llama_cpp.llama_memory_clear(self._memory, True)


def last_logits(llm: Llama) -> np.ndarray:
    """The logits of the last evaluated position (a view into llama.cpp's buffer)."""
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))


def logits(llm: Llama, rows: int) -> np.ndarray:
    """The (rows, n_vocab) logits of the last llama_decode's outputs, in order (a view)."""
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(rows, llm.n_vocab()))


class Batch:
    """One preallocated llama_batch of `n_batch` tokens in sequence 0, fed to llama_decode."""

    def __init__(self, n_batch: int) -> None:
        self.n_batch = n_batch
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def decode(self, ctx: Any, tokens: Sequence[int], check: Callable[[int], None], *,
               start_pos: int = 0, first_output: int = 0) -> None:
        """Decode `tokens` at positions start_pos.. through `ctx` (a llama_context *), n_batch at a time.

        Only tokens at index >= first_output produce outputs (logits). `check(status)` is called
        after every llama_decode call, before the next one; it raises to stop.
        """
        batch = self._batch
        for offset in range(0, len(tokens), self.n_batch):
            part = tokens[offset:offset + self.n_batch]
            batch.n_tokens = len(part)
            for i, token in enumerate(part):
                batch.token[i] = token
                batch.pos[i] = start_pos + offset + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = offset + i >= first_output
            check(llama_cpp.llama_decode(ctx, batch))

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)

"""Feeding text chunks to llama.cpp the way llama-perplexity and llama-imatrix do.

Both tools tokenize the whole text once (with BOS), cut it into chunks of `ctx` tokens and run
every chunk from an empty KV cache at position 0 with its first token replaced by BOS, so each
chunk starts like a document of its own. `first_token_bos()` makes that copy of a chunk and
`decode()` feeds tokens through one preallocated `llama_batch`, `n_batch` at a time.

llama_cpp is imported inside the functions: `convert.imatrix` only loads it when computing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

MIN_CTX = 16  # smallest chunk / evaluation window the toolchain accepts (llama.cpp's tools default to 512)


def bos_to_insert(vocab: Any) -> int | None:
    """The BOS token a chunk should start with, or None when the model adds no BOS (llama_vocab *)."""
    import llama_cpp

    return int(llama_cpp.llama_vocab_bos(vocab)) if llama_cpp.llama_vocab_get_add_bos(vocab) else None


def first_token_bos(tokens: Sequence[int], bos: int | None) -> list[int]:
    """A copy of the chunk `tokens` with its first token replaced by `bos` (unchanged when None)."""
    chunk = list(tokens)
    if bos is not None and chunk:
        chunk[0] = bos
    return chunk


def decode(ctx: Any, batch: Any, n_batch: int, tokens: Sequence[int], check: Callable[[int], None], *,
           start_pos: int = 0, first_output: int = 0) -> None:
    """Decode `tokens` in sequence 0 at positions start_pos.. through `batch` (llama_batch_init(n_batch, 0, 1)).

    Only tokens at index >= first_output produce outputs (logits). `check(status)` is called after
    every llama_decode call, before the next one; it raises to stop.
    """
    import llama_cpp

    for offset in range(0, len(tokens), n_batch):
        part = tokens[offset:offset + n_batch]
        batch.n_tokens = len(part)
        for i, token in enumerate(part):
            batch.token[i] = token
            batch.pos[i] = start_pos + offset + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = offset + i >= first_output
        check(llama_cpp.llama_decode(ctx, batch))

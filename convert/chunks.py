"""Cutting text into chunks the way llama-perplexity and llama-imatrix do.

Both tools tokenize the whole text once (with BOS), cut it into chunks of `ctx` tokens and run
every chunk from an empty KV cache at position 0 with its first token replaced by BOS, so each
chunk starts like a document of its own. `first_token_bos()` makes that copy of a chunk; the BOS
comes from `runtime.llamacpp.model.bos_to_insert` and the chunk is fed through a
`runtime.llamacpp.model.Batch`.
"""

from __future__ import annotations

from collections.abc import Sequence

MIN_CTX = 16  # smallest chunk / evaluation window the toolchain accepts (llama.cpp's tools default to 512)


def first_token_bos(tokens: Sequence[int], bos: int | None) -> list[int]:
    """A copy of the chunk `tokens` with its first token replaced by `bos` (unchanged when None)."""
    chunk = list(tokens)
    if bos is not None and chunk:
        chunk[0] = bos
    return chunk

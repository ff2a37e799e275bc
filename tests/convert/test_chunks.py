"""The chunk feeding shared by `evaluate` and `imatrix` (`convert.chunks`, and the BOS and batches of
`runtime.llamacpp.model`), on a tiny real model."""

from __future__ import annotations

import sys
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from convert.chunks import first_token_bos
from runtime.llamacpp.model import Batch, bos_to_insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_gguf
from tiny_gguf import vocabulary, write_tiny_llama

N_TOKENS, FIRST_OUTPUT = 40, 10


def test_first_token_bos_copies() -> None:
    chunk = [5, 6, 7]
    assert first_token_bos(chunk, 1) == [1, 6, 7] and chunk == [5, 6, 7]
    assert first_token_bos(chunk, None) == chunk and first_token_bos(chunk, None) is not chunk
    assert first_token_bos([], 1) == []


@pytest.mark.parametrize("add_bos", [True, False])
def test_bos_to_insert_follows_the_vocabulary(tmp_path: Path, add_bos: bool) -> None:
    model = write_tiny_llama(tmp_path / "tiny.gguf", extra_metadata={"tokenizer.ggml.add_bos_token": add_bos})
    llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    try:
        bos = bos_to_insert(llama_cpp.llama_model_get_vocab(llm.model))
    finally:
        llm.close()
    assert bos == (vocabulary()[0].index("<|endoftext|>") if add_bos else None)


def _logits(llm: llama_cpp.Llama, tokens: list[int], n_batch: int, statuses: list[int]) -> np.ndarray:
    """Decode `tokens` n_batch at a time; the outputs of the last llama_decode call."""
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    batch = Batch(n_batch)
    try:
        batch.decode(llm.ctx, tokens, statuses.append, first_output=FIRST_OUTPUT)
        last_batch = len(tokens) - (len(tokens) - 1) // n_batch * n_batch
        n_out = min(len(tokens) - FIRST_OUTPUT, last_batch)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(n_out, llm.n_vocab())).copy()
    finally:
        batch.close()


def test_decode_in_several_batches_equals_one(tmp_path: Path) -> None:
    llm = llama_cpp.Llama(model_path=str(write_tiny_llama(tmp_path / "tiny.gguf")), n_ctx=64, n_batch=64,
                          n_ubatch=64, verbose=False)
    try:
        tokens = [int(t) for t in np.random.default_rng(0).integers(0, llm.n_vocab(), N_TOKENS)]
        whole_status: list[int] = []
        whole = _logits(llm, tokens, N_TOKENS, whole_status)
        assert whole_status == [0] and whole.shape == (N_TOKENS - FIRST_OUTPUT, llm.n_vocab())
        split_status: list[int] = []
        last = _logits(llm, tokens, 7, split_status)  # batches 0-6, ..., 35-39: positions continue
        assert split_status == [0] * 6 and last.shape[0] == 5
        np.testing.assert_allclose(last, whole[-5:], rtol=1e-4, atol=1e-4)

        def stop(status: int) -> None:
            raise RuntimeError(f"stopped after status {status}")

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        batch = Batch(7)
        try:
            with pytest.raises(RuntimeError, match="stopped after status 0"):
                batch.decode(llm.ctx, tokens, stop)
            # the first batch only: check runs before the next decode
            assert llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(llm.ctx), 0) == 6
        finally:
            batch.close()
    finally:
        llm.close()

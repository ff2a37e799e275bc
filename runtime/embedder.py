"""Sentence embeddings on onnxruntime + `tokenizers`, for search by meaning (no torch).

    embedder = Embedder(Path("minilm-onnx"))          # a folder written by `edge-ai convert onnx`
    vectors = embedder.embed(["first text", "second text"])     # float32 [2, 384], unit length
    order, scores = rank(embedder.embed(["query"])[0], vectors)   # best match first

The model is a BERT-style encoder exported for feature-extraction (all-MiniLM-L6-v2 int8 is 22 MiB
and embeds ~100 short sentences per 0.1 s on 2 cores); the sentence vector is the mean of the
token vectors under the attention mask, L2-normalised, as sentence-transformers computes it, so
a dot product is the cosine similarity.

Texts are embedded one at a time by default: int8 models quantize activations dynamically, with
one scale per tensor of the whole batch, so a batched text's vector would depend on the texts it
was batched with (measured: cosine down to 0.986 between batch sizes 1 and 32 on MiniLM int8),
and the same note embedded twice must give the same vector for search. Batching is 1.6x faster
and exact for fp32 models (pass `batch_size`); batches are then made of texts of similar length
(sorted, then put back in order) so short texts are not padded to the longest one in the call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_ai.errors import EdgeAIError
from runtime.onnx_session import open_session

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2; longer text is truncated


class Embedder:
    """A sentence-embedding model folder (model.onnx + tokenizer.json), loaded once."""

    def __init__(self, folder: Path, *, threads: int = 0, max_tokens: int = MAX_TOKENS) -> None:
        from tokenizers import Tokenizer

        folder = folder.expanduser()
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise EdgeAIError(f"{folder} has no tokenizer.json; pass a folder written by "
                              "`edge-ai convert onnx --task feature-extraction`")
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise EdgeAIError(f"{tokenizer_file} cannot be read ({exc}); re-export the model") from None
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(min(max_tokens, _position_limit(folder)))
        self._session = open_session(folder / "model.onnx", threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= self._inputs:
            raise EdgeAIError(f"{folder / 'model.onnx'} takes {sorted(self._inputs)}, not input_ids and "
                              "attention_mask; it is not a text encoder (export with --task feature-extraction)")
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    def embed(self, texts: Sequence[str], *, batch_size: int = 1) -> np.ndarray:
        """Unit-length float32 vectors [len(texts), dim], in the order of `texts`."""
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            result[rows] = self._embed_batch([encodings[i] for i in rows])
        return result

    def _embed_batch(self, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding.ids)] = encoding.ids
            mask[row, :len(encoding.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        mean = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1.0)
        return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def rank(query: np.ndarray, vectors: np.ndarray, top_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of `vectors` by cosine similarity to `query` (both unit length), best first, and the scores."""
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:top_k]
    return order, scores[order]


def _position_limit(folder: Path) -> int:
    """The encoder's position-embedding count (config.json), the hard limit on tokens per text."""
    try:
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return MAX_TOKENS

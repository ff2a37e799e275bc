"""Teacher logits computed once into a top-k cache on disk, so the teacher need not stay in memory.

Per training row and position the cache keeps the teacher's k largest logits (float16) and their
token ids (int32), in shards of `shard_rows` rows (`shard-00000.values.npy` / `.indices.npy`)
plus `manifest.json`. Most of a softmax's mass sits in its top few tokens, so forward KL on the
renormalised top-k is close to the full one (exactly it when k is the vocabulary size) at a
fraction of the disk: 64 of Gemma's 262k logits per token. Written into a temp folder renamed
into place, so an interrupted run leaves no half cache.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convert.distill.data import Block
from edge_ai.errors import EdgeAIError

MANIFEST = "manifest.json"


def write_cache(teacher: Any, blocks: Sequence[Block], k: int, folder: Path, *, shard_rows: int = 64) -> None:
    """Run the teacher over every block once and store its top-k logits under `folder`."""
    import torch

    vocab = teacher.config.vocab_size
    if not 1 <= k <= vocab:
        raise EdgeAIError(f"--cache-topk {k} must be within 1..{vocab} (the vocabulary size)")
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        teacher.eval()
        for shard, first in enumerate(range(0, len(blocks), shard_rows)):
            rows = blocks[first:first + shard_rows]
            ids = torch.tensor([b.ids for b in rows])
            attention = torch.tensor([b.attention for b in rows])
            with torch.no_grad():
                top = teacher(input_ids=ids, attention_mask=attention).logits.float().topk(k, dim=-1)
            np.save(tmp / f"shard-{shard:05d}.values.npy", top.values.to(torch.float16).numpy())
            np.save(tmp / f"shard-{shard:05d}.indices.npy", top.indices.to(torch.int32).numpy())
        manifest = {"k": k, "rows": len(blocks), "length": len(blocks[0].ids), "shard_rows": shard_rows,
                    "vocab": vocab, "fingerprint": fingerprint(blocks)}
        (tmp / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgeAIError(f"cannot write the logit cache {folder}: {exc.strerror}; free some space or lower "
                          "--cache-topk") from None


def fingerprint(blocks: Sequence[Block]) -> str:
    """A hash of the training rows: a cache is only valid for the exact data it was computed on."""
    import hashlib

    digest = hashlib.sha256()
    for block in blocks:
        digest.update(np.asarray(block.ids, dtype=np.int64).tobytes())
    return digest.hexdigest()


class LogitCache:
    """Read side: top-k teacher logits of any rows, shards memory-mapped as they are needed."""

    def __init__(self, folder: Path, blocks: Sequence[Block]) -> None:
        try:
            self.manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EdgeAIError(f"no logit cache in {folder}") from None
        if self.manifest["fingerprint"] != fingerprint(blocks):
            raise EdgeAIError(f"the logit cache in {folder} was computed on other data; delete it to recompute")
        self.folder = folder
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def k(self) -> int:
        return int(self.manifest["k"])

    def _shard(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n not in self._shards:
            self._shards[n] = (np.load(self.folder / f"shard-{n:05d}.values.npy", mmap_mode="r"),
                               np.load(self.folder / f"shard-{n:05d}.indices.npy", mmap_mode="r"))
        return self._shards[n]

    def rows(self, rows: Sequence[int]) -> tuple[Any, Any]:
        """(values float32 [B, L, k], token ids int64 [B, L, k]) for the given block indices."""
        import torch

        per = int(self.manifest["shard_rows"])
        values, indices = zip(*((self._shard(r // per)[0][r % per], self._shard(r // per)[1][r % per]) for r in rows))
        return (torch.from_numpy(np.stack(values).astype(np.float32)),
                torch.from_numpy(np.stack(indices).astype(np.int64)))

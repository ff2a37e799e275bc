"""The top-k teacher logit cache: sharded fp16 values + int32 ids on disk; with k = vocabulary it
trains exactly like the live teacher, with a small k it still distills."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convert.distill.data import load_examples, make_blocks
from convert.distill.logit_cache import LogitCache, write_cache
from convert.distill.losses import LossOptions
from convert.distill.student import build_student
from convert.distill.tokenizers import load_tokenizer
from convert.distill.train import TrainOptions, divergence_to_teacher, train
from edge_ai.errors import EdgeAIError


@pytest.fixture(scope="module")
def setup(teacher, train_text: Path, held_text: Path):
    import torch
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(teacher.path)
    model = AutoModelForCausalLM.from_pretrained(teacher.path, dtype=torch.float32)
    blocks = make_blocks(load_examples(train_text, tok), 32, pack=True, pad_id=tok.pad_token_id)
    held = make_blocks(load_examples(held_text, tok), 32, pack=True, pad_id=tok.pad_token_id)
    return model, blocks, held


def test_cache_layout_and_full_k_trains_like_the_live_teacher(setup, tmp_path: Path) -> None:
    import torch

    model, blocks, _ = setup
    vocab = model.config.vocab_size
    write_cache(model, blocks, vocab, tmp_path / "full", shard_rows=8)
    manifest = json.loads((tmp_path / "full" / "manifest.json").read_text())
    assert manifest["rows"] == len(blocks) and manifest["k"] == vocab
    shards = sorted(p.name for p in (tmp_path / "full").glob("shard-*.values.npy"))
    assert len(shards) == -(-len(blocks) // 8)
    values = np.load(tmp_path / "full" / "shard-00000.values.npy")
    ids = np.load(tmp_path / "full" / "shard-00000.indices.npy")
    assert values.dtype == np.float16 and ids.dtype == np.int32 and values.shape == (8, 32, vocab)
    options = TrainOptions(steps=3, batch_size=4, lr=1e-3, loss=LossOptions(temperature=2.0, alpha=0.5))
    live, cached = build_student(model, [0, 3]), build_student(model, [0, 3])
    live_log = train(model, live, blocks, options, tmp_path / "a")
    cached_log = train(LogitCache(tmp_path / "full", blocks), cached, blocks, options, tmp_path / "b")
    for a, b in zip(live_log, cached_log):
        assert a.kd == pytest.approx(b.kd, rel=1e-3) and a.ce == pytest.approx(b.ce, rel=1e-4)
    ids = torch.tensor([blocks[0].ids])
    with torch.no_grad():  # Adam amplifies fp16 rounding on near-zero gradients: compare what the students do
        a, b = live(input_ids=ids).logits, cached(input_ids=ids).logits
    assert float((a - b).abs().max() / a.abs().max()) < 1e-2


@pytest.mark.slow
def test_top_32_cache_halves_the_kld(setup, tmp_path: Path) -> None:
    model, blocks, held = setup
    write_cache(model, blocks, 32, tmp_path / "c")
    student = build_student(model, [0, 3])
    before = divergence_to_teacher(student, model, held)
    options = TrainOptions(steps=30, batch_size=4, lr=3e-3, loss=LossOptions(temperature=1.0, alpha=1.0))
    train(LogitCache(tmp_path / "c", blocks), student, blocks, options, tmp_path / "w")
    after = divergence_to_teacher(student, model, held)
    print(f"top-32 cache: held-out KLD {before:.4f} -> {after:.4f}")
    assert after <= before / 2


def test_cache_misuse_is_refused(setup, tmp_path: Path) -> None:
    model, blocks, _ = setup
    with pytest.raises(EdgeAIError, match="must be within 1"):
        write_cache(model, blocks, 0, tmp_path / "c")
    write_cache(model, blocks[:4], 4, tmp_path / "c")
    with pytest.raises(EdgeAIError, match="other data"):
        LogitCache(tmp_path / "c", blocks)
    cache = LogitCache(tmp_path / "c", blocks[:4])
    with pytest.raises(EdgeAIError, match="forward KL only"):
        train(cache, build_student(model, [0, 3]), blocks[:4],
              TrainOptions(steps=1, loss=LossOptions("reverse")), tmp_path / "w")

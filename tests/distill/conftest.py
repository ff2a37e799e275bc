"""Fixtures for distillation tests: a tiny random qwen2 teacher (4 blocks) with a locally trained
ChatML tokenizer, built once per session from the converter tests' builder."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "convert"))

from tiny_hf import CORPUS_LINES, TinyCheckpoint, build_checkpoint  # noqa: E402

TEACHER_LAYERS = 4
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="session")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    """A 4-block qwen2 teacher whose ChatML template has a generation prompt, as Qwen's has (do not
    modify its folder)."""
    ckpt = build_checkpoint("qwen2", tmp_path_factory.mktemp("teacher") / "qwen2", num_hidden_layers=TEACHER_LAYERS)
    ckpt.hf_tokenizer.chat_template = CHATML
    ckpt.hf_tokenizer.save_pretrained(ckpt.path)
    return ckpt


@pytest.fixture(scope="session")
def train_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plain-text training data: the tokenizer's 12 corpus lines, twice, as blank-line separated documents."""
    path = tmp_path_factory.mktemp("data") / "train.txt"
    docs = [re.sub(r"\n+", "\n", line) for line in CORPUS_LINES] * 2
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path

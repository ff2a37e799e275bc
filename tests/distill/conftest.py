"""Fixtures for distillation tests: a tiny random qwen2 teacher (4 blocks) with a locally trained
ChatML tokenizer, built once per session from the converter tests' builder."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "convert"))

from tiny_hf import TinyCheckpoint, build_checkpoint  # noqa: E402

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


WORDS = "the quick brown fox jumps over lazy dog we like some tea numbers code print return if for".split()


def sentences(seed: int, count: int) -> str:
    """`count` blank-line separated random sentences over a small word list: training and held-out
    text from one distribution, so what the student learns on one shows on the other."""
    rng = random.Random(seed)
    return "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) + "." for _ in range(count))


@pytest.fixture(scope="session")
def train_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training data: 60 plain-text documents."""
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text(sentences(1, 60), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def held_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out data: 15 other documents from the same generator."""
    path = tmp_path_factory.mktemp("data") / "held.txt"
    path.write_text(sentences(2, 15), encoding="utf-8")
    return path

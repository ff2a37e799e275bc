"""Refuse a teacher/student pair whose tokenizers differ, before any training.

KD compares the two models' distributions token id by token id: if id 17 is "the" for the teacher
and "ing" for the student, training runs without error and teaches the wrong thing. So the
vocabulary, the special tokens and the chat template must be identical, and the error names what
differs rather than just saying "mismatch".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_ai.errors import EdgeAIError

_SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")
_EXAMPLES = 3  # differing tokens named in the error


def load_tokenizer(path: Path, gguf_file: str | None = None) -> Any:
    """transformers' fast tokenizer for a checkpoint folder (or a GGUF file inside it)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its warnings (e.g. a Mistral regex notice on any saved copy) are not ours
    try:
        return AutoTokenizer.from_pretrained(path, gguf_file=gguf_file) if gguf_file else \
            AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise EdgeAIError(f"cannot load a tokenizer from {path}: {str(exc).splitlines()[0]}; "
                          "point at a Hugging Face folder with tokenizer files") from None


def tokenizer_differences(teacher: Any, student: Any) -> list[str]:
    """Human-readable differences between two tokenizers (empty when they are interchangeable)."""
    diffs = []
    t_vocab, s_vocab = teacher.get_vocab(), student.get_vocab()
    if len(t_vocab) != len(s_vocab):
        diffs.append(f"vocabulary size {len(t_vocab)} (teacher) vs {len(s_vocab)} (student)")
    only_t = sorted(set(t_vocab) - set(s_vocab), key=t_vocab.__getitem__)
    only_s = sorted(set(s_vocab) - set(t_vocab), key=s_vocab.__getitem__)
    if only_t:
        diffs.append(f"{len(only_t)} token(s) only in the teacher, e.g. {_show(only_t)}")
    if only_s:
        diffs.append(f"{len(only_s)} token(s) only in the student, e.g. {_show(only_s)}")
    moved = sorted((tok for tok in set(t_vocab) & set(s_vocab) if t_vocab[tok] != s_vocab[tok]),
                   key=t_vocab.__getitem__)
    if moved:
        examples = ", ".join(f"{tok!r} {t_vocab[tok]} vs {s_vocab[tok]}" for tok in moved[:_EXAMPLES])
        diffs.append(f"{len(moved)} token(s) with other ids, e.g. {examples}")
    for role in _SPECIAL_ROLES:
        t_tok, s_tok = getattr(teacher, role, None), getattr(student, role, None)
        if t_tok != s_tok:
            diffs.append(f"{role} {t_tok!r} (teacher) vs {s_tok!r} (student)")
    if getattr(teacher, "chat_template", None) != getattr(student, "chat_template", None):
        diffs.append("chat templates differ")
    return diffs


def _show(tokens: list[str]) -> str:
    return ", ".join(repr(tok) for tok in tokens[:_EXAMPLES])


SAME_TOKENIZER_ADVICE = ("distill into a student with the teacher's tokenizer (the default student, built from the "
                         "teacher's layers, has it)")


def check_same_tokenizer(teacher: Any, student: Any, advice: str = SAME_TOKENIZER_ADVICE) -> None:
    """Raise EdgeAIError naming every difference (then `advice`) when the student cannot be
    distilled from the teacher."""
    diffs = tokenizer_differences(teacher, student)
    if diffs:
        raise EdgeAIError("teacher and student tokenizers differ: " + "; ".join(diffs) + "; " + advice)

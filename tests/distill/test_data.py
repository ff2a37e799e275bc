"""Tokenizer comparison and data loading: chat masks, packing, lengths, seeded order, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_hf import train_bpe_tokenizer

from convert.distill.data import Block, batch_indices, epoch_order, load_examples, make_blocks
from convert.distill.tokenizers import check_same_tokenizer, load_tokenizer
from edge_ai.errors import EdgeAIError

CHATS = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."},
     {"role": "assistant", "content": "hi there"}],
    [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "1 2 3"},
     {"role": "user", "content": "And back?"}, {"role": "assistant", "content": "3 2 1"}],
]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps({"messages": m}) for m in rows) + "\n", encoding="utf-8")
    return path


def test_same_tokenizer_passes_and_a_different_one_is_refused_naming_the_differences(teacher, tmp_path: Path) -> None:
    tok = load_tokenizer(teacher.path)
    check_same_tokenizer(tok, load_tokenizer(teacher.path))
    other = train_bpe_tokenizer("gpt2", tmp_path / "gpt2", vocab_size=650)
    with pytest.raises(EdgeAIError) as exc:
        check_same_tokenizer(tok, other)
    msg = str(exc.value)
    assert "vocabulary size" in msg and "only in the teacher" in msg and "eos_token '<|im_end|>'" in msg
    assert "chat templates differ" in msg and "\n" not in msg


def test_a_changed_chat_template_alone_is_named(teacher, tmp_path: Path) -> None:
    shutil.copytree(teacher.path, tmp_path / "s", ignore=shutil.ignore_patterns("*.safetensors*"))
    student = load_tokenizer(tmp_path / "s")
    student.chat_template = student.chat_template.replace("\n", " ")
    with pytest.raises(EdgeAIError, match=r"differ: chat templates differ; "):
        check_same_tokenizer(load_tokenizer(teacher.path), student)


def test_chat_loss_covers_exactly_the_assistant_answers(teacher, tmp_path: Path) -> None:
    """The masking proof: decoding the target tokens gives back only what the assistant said (plus its
    end-of-turn token), and every system/user token and role header is excluded."""
    tok = load_tokenizer(teacher.path)
    examples = load_examples(_write_jsonl(tmp_path / "chat.jsonl", CHATS), tok)
    assert len(examples) == 2
    for ex, chat in zip(examples, CHATS):
        assert len(ex.ids) == len(ex.target)
        learned = tok.decode([i for i, t in zip(ex.ids, ex.target) if t])
        context = tok.decode([i for i, t in zip(ex.ids, ex.target) if not t])
        answers = [m["content"] for m in chat if m["role"] == "assistant"]
        assert learned == "".join(f"{a}<|im_end|>\n" for a in answers)
        for m in chat:
            if m["role"] != "assistant":
                assert m["content"] in context and m["content"] not in learned
        assert "assistant" not in learned  # the role header is the template's, not the answer


def test_plain_text_documents_are_all_targets_and_end_with_eos(teacher, train_text: Path) -> None:
    tok = load_tokenizer(teacher.path)
    examples = load_examples(train_text, tok)
    assert len(examples) == 60
    assert all(all(ex.target) and ex.ids[-1] == tok.eos_token_id for ex in examples)


def test_packing_and_max_length(teacher, train_text: Path) -> None:
    tok = load_tokenizer(teacher.path)
    examples = load_examples(train_text, tok)
    n_tokens = sum(len(ex.ids) for ex in examples)
    packed = make_blocks(examples, 32, pack=True, pad_id=tok.pad_token_id)
    assert all(len(b.ids) == len(b.target) == len(b.attention) == 32 for b in packed)
    assert [i for b in packed for i, a in zip(b.ids, b.attention) if a] == [i for ex in examples for i in ex.ids]
    assert len(packed) == -(-n_tokens // 32)
    single = make_blocks(examples, 32, pack=False, pad_id=tok.pad_token_id)
    assert len(single) == len(examples)
    for block, ex in zip(single, examples):
        kept = min(32, len(ex.ids))
        assert block.ids[:kept] == ex.ids[:kept] and sum(block.attention) == kept
        assert set(block.ids[kept:]) <= {tok.pad_token_id} and not any(block.target[kept:])


def test_shuffle_is_seeded_and_covers_every_block_each_epoch() -> None:
    assert epoch_order(10, 1, 0) == epoch_order(10, 1, 0)
    assert epoch_order(10, 1, 0) != epoch_order(10, 2, 0) and epoch_order(10, 1, 0) != epoch_order(10, 1, 1)
    run = [i for n in range(5) for i in batch_indices(10, 4, seed=1, batch_number=n)]
    assert sorted(run[:10]) == list(range(10)) and sorted(run[10:20]) == list(range(10))
    assert batch_indices(10, 4, 1, 3) == run[12:16]  # any batch can be recomputed alone (resume)


def test_bad_data_is_refused_with_one_line(teacher, tmp_path: Path) -> None:
    tok = load_tokenizer(teacher.path)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n", encoding="utf-8")
    with pytest.raises(EdgeAIError, match="is empty"):
        load_examples(empty, tok)
    with pytest.raises(EdgeAIError, match="no such data file"):
        load_examples(tmp_path / "missing.txt", tok)
    no_answer = _write_jsonl(tmp_path / "q.jsonl", [CHATS[0], [{"role": "user", "content": "hello?"}]])
    with pytest.raises(EdgeAIError, match=r"q.jsonl line 2 has no assistant turn"):
        load_examples(no_answer, tok)
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"messages": [}\n', encoding="utf-8")
    with pytest.raises(EdgeAIError, match="line 1 is not"):
        load_examples(broken, tok)
    with pytest.raises(EdgeAIError, match="too short"):
        make_blocks(load_examples(_write_jsonl(tmp_path / "c.jsonl", CHATS), tok), 1, pack=True, pad_id=0)


def test_blocks_without_targets_are_dropped() -> None:
    from convert.distill.data import Example
    prompt_only = Example((1, 2, 3, 4), (False, False, False, False))
    answer = Example((5, 6, 7, 8), (False, False, True, True))
    blocks = make_blocks([prompt_only, answer], 4, pack=True, pad_id=0)
    assert blocks == [Block((5, 6, 7, 8), (False, False, True, True), (1, 1, 1, 1))]

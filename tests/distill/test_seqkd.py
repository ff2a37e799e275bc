"""Sequence-level KD: the tiny teacher, as a GGUF run by our engine, answers the data's prompts;
the answers are cached line by line (an interrupted run keeps them) and become the training
targets (only the answers' tokens)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convert.distill.seqkd import Answer, answer_examples, generate_answers, read_prompts
from convert.distill.tokenizers import load_tokenizer
from edge_ai.errors import EdgeAIError

CHAT = [
    {"messages": [{"role": "user", "content": "the quick brown fox"}, {"role": "assistant", "content": "jumps."}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "we like tea"},
                  {"role": "assistant", "content": "code print."}, {"role": "user", "content": "return if"},
                  {"role": "assistant", "content": "the fox."}]},
    {"messages": [{"role": "user", "content": "print some numbers"}, {"role": "assistant", "content": "for the dog."}]},
]


@pytest.fixture(scope="module")
def teacher_gguf(teacher, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from convert.gguf import convert_checkpoint

    path = tmp_path_factory.mktemp("seqkd") / "teacher.gguf"
    convert_checkpoint(teacher.path, path, outtype="f32")
    return path


def _greedy(gguf: Path, prompt, max_tokens: int) -> str:
    """What the engine answers, asked directly (the reference for the cache)."""
    from runtime.llm.engine import Engine
    from runtime.llm.events import DoneEvent, SamplingParams

    engine = Engine(gguf)
    try:
        sampling = SamplingParams(temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=max_tokens, seed=0)
        events = engine.chat(prompt.messages, sampling) if prompt.messages is not None else \
            engine.complete(prompt.text, SamplingParams(temperature=0.0, top_k=1, repeat_penalty=1.0,
                                                        max_tokens=max_tokens, seed=0, stop=("\n\n",)))
        return [e for e in events if isinstance(e, DoneEvent)][-1].text
    finally:
        engine.close()


def test_prompts_are_cut_before_the_last_answer_or_at_half_a_document(teacher, tmp_path: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps(c) for c in CHAT) + "\n")
    prompts = read_prompts(chat)
    assert [len(p.messages) for p in prompts] == [1, 4, 1] and prompts[1].messages[2]["content"] == "code print."
    text = tmp_path / "a.txt"
    text.write_text("one two three four five\n\nsix")
    assert [p.text for p in read_prompts(text)] == ["one two", "six"]
    tok = load_tokenizer(teacher.path)
    example = answer_examples(read_prompts(text)[:1], [Answer(" the quick fox", ended=True)], tok)[0]
    assert tok.decode([i for i, t in zip(example.ids, example.target) if t]) == " the quick fox" + tok.eos_token
    assert tok.decode(example.ids).startswith("one two the quick fox")
    chat.write_text(json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}) + "\n")
    with pytest.raises(EdgeAIError, match="line 1 starts with its assistant turn"):
        read_prompts(chat)


@pytest.mark.slow
def test_teacher_answers_are_cached_resumably_and_become_the_only_targets(teacher, teacher_gguf: Path,
                                                                         tmp_path: Path) -> None:
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps(c) for c in CHAT) + "\n")
    prompts, cache = read_prompts(chat), tmp_path / "answers.jsonl"
    answers = generate_answers(teacher_gguf, prompts, cache, max_tokens=8)
    assert [a.text for a in answers] == [_greedy(teacher_gguf, p, 8) for p in prompts]
    lines = cache.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["max_tokens"] == 8

    # interrupted after the second answer, in the middle of writing the third; the second was edited
    edited = json.loads(lines[2]) | {"text": "MARKER"}
    cache.write_text("\n".join([lines[0], lines[1], json.dumps(edited)]) + "\n" + lines[3][:20])
    again = generate_answers(teacher_gguf, prompts, cache, max_tokens=8)
    assert [a.text for a in again] == [answers[0].text, "MARKER", answers[2].text]  # kept, not regenerated
    assert len(cache.read_text().splitlines()) == 4
    assert generate_answers(teacher_gguf, prompts, cache, max_tokens=6)[1].text != "MARKER"  # other settings

    tok = load_tokenizer(teacher.path)
    examples = answer_examples(prompts, again, tok)
    learned = tok.decode([i for i, t in zip(examples[1].ids, examples[1].target) if t])
    assert learned == "MARKER<|im_end|>\n"  # only the teacher's answer (and its end of turn), not the data's turns
    assert "return if" in tok.decode(examples[1].ids)

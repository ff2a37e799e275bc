"""Sequence-level KD (Kim & Rush): the student learns from the teacher's own answers.

Before training, the teacher (as a GGUF, run by our llama.cpp engine: fast on CPU, and the model
the user actually ships from) answers the prompts of the data set greedily; the student then trains
on those answers instead of the data's. Token-level KD still applies on top (the divergence to the
teacher's logits on the generated text), the combination Kim & Rush found best.

Prompts: for chat data, each conversation up to its last assistant turn (which the teacher's
answer replaces; earlier turns stay as written, as context the student does not learn to
write); for plain text, the first half of each document
(by words), which the teacher continues. The answers are appended to a JSONL cache one line at a
time, so an interrupted run keeps what it generated and a rerun only generates the rest; the first
line records what the answers depend on (teacher file, settings), and a cache that does not match
is started over.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convert.distill.data import Example, chat_example, continuation_example, is_chat, read_conversations, read_documents
from edge_ai.errors import EdgeAIError

TEXT_STOP = "\n\n"  # a plain-text answer is one document; documents are blank-line separated


@dataclass(frozen=True)
class Prompt:
    """One thing for the teacher to answer."""
    where: str                       # data file and line or document number, for errors
    messages: list[dict] | None      # chat: the conversation before the replaced assistant turn
    text: str | None                 # plain text: the beginning of a document


@dataclass(frozen=True)
class Answer:
    text: str
    ended: bool  # the teacher stopped on its own (not at the token limit)


def read_prompts(path: Path) -> list[Prompt]:
    """The prompts of a data file (see the module docstring for how they are cut)."""
    if is_chat(path):
        prompts = []
        for where, messages in read_conversations(path):
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            if last == 0:
                raise EdgeAIError(f"{where} starts with its assistant turn: there is no prompt for the teacher to "
                                  "answer; give the line a user turn or drop --seq-kd")
            prompts.append(Prompt(where, messages[:last], None))
        return prompts
    prompts = []
    for n, doc in enumerate(read_documents(path), 1):
        words = doc.strip().split(" ")
        prompts.append(Prompt(f"{path} document {n}", None, " ".join(words[:max(1, len(words) // 2)])))
    return prompts


def generate_answers(teacher_gguf: Path, prompts: Sequence[Prompt], cache: Path, *, max_tokens: int,
                     progress: Callable[[int, int, str], None] | None = None) -> list[Answer]:
    """The teacher's greedy answer to every prompt, from `cache` where present, generated (and
    appended to it) otherwise."""
    from runtime.llm.engine import Engine
    from runtime.llm.events import DoneEvent, SamplingParams

    if max_tokens < 1:
        raise EdgeAIError(f"--seq-kd-max-tokens {max_tokens} must be at least 1")
    header = {"teacher": str(teacher_gguf.resolve()), "teacher_bytes": teacher_gguf.stat().st_size, "max_tokens": max_tokens}
    answers = _read_cache(cache, header, prompts)
    if len(answers) == len(prompts):
        return answers
    sampling = SamplingParams(temperature=0.0, top_k=1, repeat_penalty=1.0, max_tokens=max_tokens, seed=0)
    engine = Engine(teacher_gguf)
    try:
        with cache.open("a", encoding="utf-8") as file:
            if not answers:
                file.write(json.dumps(header) + "\n")
            for prompt in prompts[len(answers):]:
                events = engine.chat(prompt.messages, sampling) if prompt.messages is not None else \
                    engine.complete(prompt.text, dataclasses.replace(sampling, stop=(TEXT_STOP,)))
                done = [e for e in events if isinstance(e, DoneEvent)][-1]
                answer = Answer(done.text, done.reason == "stop")
                file.write(json.dumps({"prompt": _key(prompt), "text": answer.text, "ended": answer.ended}) + "\n")
                file.flush()
                os.fsync(file.fileno())  # a line is either whole on disk or dropped on the next read
                answers.append(answer)
                if progress:
                    progress(len(answers), len(prompts), "teacher answers")
    except OSError as exc:
        raise EdgeAIError(f"cannot write the teacher's answers to {cache}: {exc.strerror}; free some space and "
                          "run again (the answers so far are kept)") from None
    finally:
        engine.close()
    return answers


def _key(prompt: Prompt) -> Any:
    return prompt.messages if prompt.messages is not None else prompt.text


def _read_cache(cache: Path, header: dict[str, Any], prompts: Sequence[Prompt]) -> list[Answer]:
    """The answers already in `cache` for these prompts, in order; the file is truncated after
    them (a torn last line, or answers to other prompts) or emptied when the header differs."""
    if not cache.is_file():
        return []
    lines = cache.read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines or _json(lines[0]) != header:
        cache.unlink()
        return []
    answers: list[Answer] = []
    keep = len(lines[0])
    for line, prompt in zip(lines[1:], prompts):
        entry = _json(line)
        if not line.endswith("\n") or not isinstance(entry, dict) or entry.get("prompt") != _key(prompt):
            break
        answers.append(Answer(entry["text"], bool(entry["ended"])))
        keep += len(line)
    with cache.open("r+", encoding="utf-8") as file:
        file.truncate(len("".join(lines)[:keep].encode("utf-8")))
    return answers


def _json(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def answer_examples(prompts: Sequence[Prompt], answers: Sequence[Answer], tokenizer: Any) -> list[Example]:
    """Training examples: each prompt with the teacher's answer, only the answer's tokens as targets."""
    examples = []
    for prompt, answer in zip(prompts, answers, strict=True):
        if prompt.messages is not None:
            examples.append(chat_example([*prompt.messages, {"role": "assistant", "content": answer.text}],
                                         prompt.where, tokenizer, last_turn_only=True))
        else:
            examples.append(continuation_example(prompt.text, answer.text, tokenizer, ended=answer.ended))
    return examples

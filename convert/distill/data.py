"""Training data for distillation: plain text or chat JSONL, tokenized into fixed-length blocks.

A `Sequence` carries token ids and a per-token `target` flag: True where the model is trained to
predict that token. For chat data (`{"messages": [...]}` per line) only assistant tokens are
targets, as in SFT: the prompt is context, not something to imitate. The block order is a pure
function of (seed, epoch), so `--resume` replays exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ai.errors import EdgeAIError


@dataclass(frozen=True)
class Example:
    """One tokenized document or conversation."""
    ids: tuple[int, ...]
    target: tuple[bool, ...]  # per token: is it a loss target?


@dataclass(frozen=True)
class Block:
    """One training row of exactly `max_length` tokens (padding has attention 0 and no target)."""
    ids: tuple[int, ...]
    target: tuple[bool, ...]
    attention: tuple[int, ...]


def load_examples(path: Path, tokenizer: Any) -> list[Example]:
    """Tokenize `path`: `.jsonl` is chat (one `{"messages": [...]}` per line), anything else plain
    text whose documents are separated by blank lines."""
    if is_chat(path):
        return [chat_example(messages, where, tokenizer) for where, messages in read_conversations(path)]
    return [_text_example(doc, tokenizer) for doc in read_documents(path)]


def is_chat(path: Path) -> bool:
    return path.suffix == ".jsonl"


def _read(path: Path) -> str:
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgeAIError(f"no such data file: {path}") from None
    except UnicodeDecodeError:
        raise EdgeAIError(f"{path} is not UTF-8 text; convert it first (e.g. iconv -t utf-8)") from None
    if not text.strip():
        raise EdgeAIError(f"data file {path} is empty; give it some text or chat lines to learn from")
    return text


def read_documents(path: Path) -> list[str]:
    """The blank-line separated documents of a plain text file."""
    return [doc for doc in _read(path).split("\n\n") if doc.strip()]


def read_conversations(path: Path) -> list[tuple[str, list[dict]]]:
    """(where, messages) of every line of a chat JSONL file, checked: role/content messages with
    at least one assistant turn."""
    out = []
    for n, line in enumerate(_read(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            messages = json.loads(line)["messages"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EdgeAIError(f'{where} is not {{"messages": [...]}} JSON; write one conversation per line') from None
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                     for m in messages):
            raise EdgeAIError(f"{where}: messages must be a list of {{\"role\", \"content\"}} objects")
        if not any(m["role"] == "assistant" for m in messages):
            raise EdgeAIError(f"{where} has no assistant turn, so nothing to learn; add one or drop the line")
        out.append((where, messages))
    return out


def _text_example(doc: str, tokenizer: Any) -> Example:
    ids = list(tokenizer(doc, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)  # documents end, so the student learns where
    return Example(tuple(ids), (True,) * len(ids))


def continuation_example(prompt: str, continuation: str, tokenizer: Any, *, ended: bool) -> Example:
    """A text prompt and what was written after it: only the continuation's tokens are targets
    (and the end of the document, when the writer ended it)."""
    enc = tokenizer(prompt + continuation, add_special_tokens=True, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    target = [begin >= len(prompt) and end > begin for begin, end in enc["offset_mapping"]]
    if ended and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        target.append(True)
    return Example(tuple(ids), tuple(target))


def chat_example(messages: list[dict], where: str, tokenizer: Any, *, last_turn_only: bool = False) -> Example:
    """One conversation, tokenized with the tokenizer's chat template: only assistant tokens are
    targets (only the last assistant turn's with `last_turn_only`)."""
    if not getattr(tokenizer, "chat_template", None):
        raise EdgeAIError(f"{where.rsplit(' line ', 1)[0]} is chat data but the teacher's tokenizer has no chat "
                          "template; use plain text data or a teacher with a template")
    text, spans = _assistant_spans(messages, tokenizer, where)
    spans = spans[-1:] if last_turn_only else spans
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    target = tuple(any(start <= begin < end for start, end in spans) for begin, _ in enc["offset_mapping"])
    return Example(tuple(enc["input_ids"]), target)


def _assistant_spans(messages: list[dict], tokenizer: Any, where: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the assistant wrote.

    Rendering ever longer prefixes of the conversation tells which characters each message added;
    for an assistant message the span starts after the generation prompt (the role header is
    the template's, not the model's answer) and runs to the next message, end-of-turn token included.
    """
    def render(msgs: list[dict], prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)

    full = render(messages)
    spans = []
    for k, message in enumerate(messages):
        before, after = render(messages[:k]) if k else "", render(messages[:k + 1])
        if not full.startswith(after) or not after.startswith(before):
            raise EdgeAIError(f"{where}: the chat template does not render conversations as growing prefixes, "
                              "so assistant tokens cannot be told apart; use plain text data")
        if message["role"] == "assistant":
            header = render(messages[:k], prompt=True) if k else ""
            start = len(header) if after.startswith(header) and len(header) > len(before) else len(before)
            spans.append((start, len(after)))
    return full, spans


def make_blocks(examples: Sequence[Example], max_length: int, *, pack: bool, pad_id: int) -> list[Block]:
    """Fixed-length rows: packed (documents concatenated and cut every `max_length` tokens, no
    padding wasted) or one example per row (truncated, padded)."""
    if max_length < 2:
        raise EdgeAIError(f"--max-length {max_length} is too short; use at least 2 tokens")
    if pack:
        ids = [i for ex in examples for i in ex.ids]
        target = [t for ex in examples for t in ex.target]
        rows = [(ids[s:s + max_length], target[s:s + max_length]) for s in range(0, len(ids), max_length)]
    else:
        rows = [(list(ex.ids[:max_length]), list(ex.target[:max_length])) for ex in examples]
    blocks = []
    for ids, target in rows:
        if not any(target[1:]):  # position 0 is never predicted
            continue
        pad = max_length - len(ids)
        blocks.append(Block(tuple(ids) + (pad_id,) * pad, tuple(target) + (False,) * pad,
                            (1,) * len(ids) + (0,) * pad))
    if not blocks:
        raise EdgeAIError("the data has no tokens to learn from after tokenizing; give it more text")
    return blocks


@functools.lru_cache(maxsize=4)
def epoch_order(n_blocks: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The block order of one epoch: shuffled, but the same for the same (seed, epoch)."""
    order = list(range(n_blocks))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


def batch_indices(n_blocks: int, batch_size: int, seed: int, batch_number: int) -> list[int]:
    """Block indices of the `batch_number`-th batch of the whole run (epochs follow each other)."""
    first = batch_number * batch_size
    out = []
    for k in range(first, first + batch_size):
        epoch, pos = divmod(k, n_blocks)
        out.append(epoch_order(n_blocks, seed, epoch)[pos])
    return out


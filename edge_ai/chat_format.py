"""Which prompt format a model gets: its own chat template, a built-in turn format, or a transcript.

A GGUF with a chat template is instruction-tuned and says how to talk to it. A file without one
is either an instruction-tuned model whose converter dropped the template (it still knows its
family's turn tokens: Gemma's `<start_of_turn>`, ChatML's `<|im_start|>`), or a *base* model,
for which turn tokens mean nothing: Gemma 3 270M base writes fake turns until `max_tokens` when
prompted that way (0 of 30 replies ended on their own), while a plain "User: ... Assistant:"
transcript with two example exchanges ends on its own 29 times in 30. So a file without a
template gets a built-in format only when its name or metadata mark it as instruction-tuned and
its family's format is known; everything else gets the transcript.

The choice is made here, in the core (from the GGUF header alone), so `models list` / `models
info` show exactly what the engine will do. It can be forced per model (`models add --format`)
and in the config (`model.format`).
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from typing import Literal

from gguf.constants import Keys

from edge_ai.config import FORMAT_CHOICES
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import GGUFInfo

FormatKind = Literal["template", "builtin", "transcript"]

GEMMA_ARCHITECTURES = frozenset({"gemma", "gemma2", "gemma3", "gemma3n"})
CHATML_TOKEN = "<|im_start|>"

# Words in a model's name that mark it as tuned to follow instructions ("gemma-3-270m-it",
# "Qwen2.5-0.5B-Instruct", "llama-2-7b-chat", "...-sft", "...-dpo").
_INSTRUCT_WORDS = re.compile(r"(?:^|[-_. /])(it|instruct|chat|sft|dpo|rlhf|assistant)(?:$|[-_. /])", re.IGNORECASE)
_NAME_KEYS = (Keys.General.FINETUNE, Keys.General.NAME, Keys.General.BASENAME)


@dataclass(frozen=True)
class FormatChoice:
    """The format a model is prompted with, and why (shown by `models info`)."""

    kind: FormatKind
    reason: str
    builtin: str | None = None
    """The built-in format's name ("gemma", "chatml") when `kind` is "builtin"."""

    @property
    def label(self) -> str:
        """Short form for tables: "template", "built-in (gemma)", "transcript"."""
        return f"built-in ({self.builtin})" if self.kind == "builtin" else self.kind


def instruction_tuned(info: GGUFInfo) -> bool:
    """Whether the file's name or metadata say the model was tuned to follow instructions."""
    names = [info.metadata.get(key) for key in _NAME_KEYS] + [info.path.stem]
    return any(isinstance(name, str) and _INSTRUCT_WORDS.search(name) for name in names)


def builtin_family(info: GGUFInfo) -> str | None:
    """The built-in turn format this model's tokens support, if any: Gemma turns for the Gemma
    architectures, ChatML when `<|im_start|>` is one of its tokens."""
    if info.architecture in GEMMA_ARCHITECTURES:
        return "gemma"
    if _has_token(info, CHATML_TOKEN):
        return "chatml"
    return None


def _has_token(info: GGUFInfo, token: str) -> bool:
    """Whether `token` is a whole entry of the vocabulary.

    The token list is skipped by the header reader (262k strings), so search its bytes instead:
    GGUF stores each string as a little-endian u64 length followed by the bytes, which this
    pattern matches exactly. Searching the header (everything before the tensor data) is a
    single C-level scan, a few milliseconds even for a large vocabulary.
    """
    raw = token.encode()
    pattern = struct.pack("<Q", len(raw)) + raw
    try:
        with open(info.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return buf.find(pattern, 0, min(info.data_offset, len(buf))) >= 0
    except (OSError, ValueError):
        return False


def choose_format(info: GGUFInfo, wanted: str = "auto") -> FormatChoice:
    """Decide how to prompt the model in `info`; `wanted` forces a kind (see FORMAT_CHOICES)."""
    if wanted not in FORMAT_CHOICES:
        raise EdgeAIError(f"unknown chat format '{wanted}'; choose one of {', '.join(FORMAT_CHOICES)}")
    family = builtin_family(info)
    if wanted == "template":
        if not info.chat_template:
            raise EdgeAIError(f"{info.path.name} has no chat template, so format 'template' cannot be used; "
                              "choose 'builtin', 'transcript' or 'auto'")
        return FormatChoice("template", "forced: the file's chat template")
    if wanted == "builtin":
        if family is None:
            raise EdgeAIError(f"no built-in chat format fits {info.path.name} (not a Gemma model, no ChatML tokens); "
                              "choose 'transcript' or 'auto'")
        return FormatChoice("builtin", f"forced: built-in {family} turns", family)
    if wanted == "transcript":
        return FormatChoice("transcript", "forced: a plain User/Assistant transcript")
    if info.chat_template:
        return FormatChoice("template", "the file's chat template")
    if not instruction_tuned(info):
        return FormatChoice("transcript", "no chat template and not marked instruction-tuned (a base model)")
    if family is None:
        return FormatChoice("transcript", "instruction-tuned but no chat template and no known turn tokens")
    return FormatChoice("builtin", f"instruction-tuned without a chat template: built-in {family} turns", family)

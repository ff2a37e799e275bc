"""Chat templates: turn a list of messages into the prompt text a model was trained on.

A GGUF's `tokenizer.chat_template` is code from whoever made the file, so it is rendered in a
Jinja sandbox that (a) refuses access to Python internals and (b) is bounded in time and output
size: llama-cpp-python's own formatter is sandboxed but unbounded, and a template loop could hang
the app. Files without a template get a built-in format (`edge_ai.chat_format` decides which).

Every template sees turns that alternate (`alternating_turns`): a reply stopped before its first word
(a barge-in while the model thinks, Esc) leaves no assistant message, or an empty one, between two user
messages, and many models' own templates (Llama 2, Mistral, Gemma) raise "roles must alternate" at that.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge_ai.errors import EdgeAIError

RENDER_SECONDS = 2.0
MAX_OUTPUT_CHARS = 4_000_000

GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set first_user = namespace(prefix='') %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first_user.prefix = messages[0]['content'] + '\n\n' %}"
    "{% set messages = messages[1:] %}"
    "{% endif %}"
    "{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if loop.first %}{{ first_user.prefix }}{% endif %}"
    "{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

CHATML_TEMPLATE = (
    "{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# A base model continues text; it has never seen turn tokens. A transcript it can recognise, with
# two example exchanges that show short answers ending in a blank line, makes it answer the
# question and stop (`TRANSCRIPT.stops`). The examples stay generic so they bias no topic.
TRANSCRIPT_EXAMPLES = (
    ("What is the boiling point of water at sea level?",
     "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level."),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
)
TRANSCRIPT_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{{ messages[0]['content'] | trim }}\n\n"
    "{% set messages = messages[1:] %}"
    "{% endif %}"
    + "".join(f"User: {q}\nAssistant: {a}\n\n" for q, a in TRANSCRIPT_EXAMPLES)
    + "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}Assistant: {{ m['content'] | trim }}\n\n"
    "{% else %}User: {{ m['content'] | trim }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class BuiltinFormat:
    """A chat format for files without a template.

    `turn_markers`: control tokens that mean 'the model began a new turn' (end the reply).
    `stops`: strings that end the reply (the transcript's next turn or paragraph).
    `strip_leading`: drop the spaces that start the reply (the transcript's "Assistant:" is
    followed by a space the model writes itself).
    """

    name: str
    template: str
    turn_markers: tuple[str, ...] = ()
    stops: tuple[str, ...] = ()
    strip_leading: bool = False


GEMMA = BuiltinFormat("gemma", GEMMA_TEMPLATE, ("<start_of_turn>", "<end_of_turn>"))
CHATML = BuiltinFormat("chatml", CHATML_TEMPLATE, ("<|im_start|>", "<|im_end|>"))
TRANSCRIPT = BuiltinFormat("transcript", TRANSCRIPT_TEMPLATE, stops=("\nUser:", "\n\n"), strip_leading=True)
BUILTIN_FORMATS = {f.name: f for f in (GEMMA, CHATML, TRANSCRIPT)}


class _TemplateTimeout(Exception):
    pass


class UnsafeTemplateError(EdgeAIError):
    """The template tried to escape the sandbox, ran away, or blew up in size: the file is hostile or broken."""


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (Hugging Face's marker for assistant text) renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """Hugging Face's `tojson`: plain JSON (Jinja's own HTML-escapes and sorts keys)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _check_size(value: Any) -> None:
    """Refuse an integer or a sized value (string, list, range...) larger than any prompt could need.

    Checked on the arguments and results of every call, filter, `+`, `*`, `%` and `~` in a
    template, so a hostile template cannot ask for gigabytes in one step before the deadline is
    next checked.
    """
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"a value of {value} is too large")
    if isinstance(value, (str, list, tuple, dict, range)) and len(value) > MAX_OUTPUT_CHARS:
        unit = "characters" if isinstance(value, str) else "items"
        raise SecurityError(f"a {type(value).__name__} of {len(value)} {unit} is too large")


_PERCENT_FIELD = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d*))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*?:([^{}]*)\}")


def _check_format_widths(text: Any) -> None:
    """Refuse a format string whose field widths or precisions ask for a giant result:
    `'%1000000000d' % 1` or `'{:>1000000000}'.format(1)` allocate before any size check could see it."""
    if not isinstance(text, str) or ("%" not in text and "{" not in text):
        return
    numbers = [n for field in _PERCENT_FIELD.findall(text) for n in field if n]
    numbers += [n for spec in _BRACE_SPEC.findall(text) for n in re.findall(r"\d+", spec)]
    if any(int(n) > MAX_OUTPUT_CHARS for n in numbers):
        raise SecurityError("a format width is too large")


def _format_string_of(function: Any) -> str | None:
    """The string behind `'...'.format` / `.format_map` (Jinja may hand over its own wrapper of it)."""
    method = getattr(function, "__wrapped__", function)
    owner = getattr(method, "__self__", None)
    return owner if isinstance(owner, str) and getattr(method, "__name__", "") in ("format", "format_map") else None


def _bounded_filter(function: Any, name: str) -> Any:
    """Wrap a Jinja filter with the size checks (keeps Jinja's pass_context/... markers)."""

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _check_size(value)
        if name == "format" and args:
            _check_format_widths(args[0])
        result = function(*args, **kwargs)
        _check_size(result)
        return result

    return bounded


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles `a ~ b` to a size-checked join instead of Jinja's unchecked `str_join`."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """A sandbox that also stops runaway loops and giant strings, and refuses unsafe attributes.

    While a template renders, a line tracer on the compiled template's frames checks a deadline
    (that catches any loop, even one that calls nothing); `+`, `*`, `**`, `%`, `~`, calls, filters
    and format widths check sizes, so `'x' * 10**10` or a doubling loop cannot exhaust memory
    before the deadline is seen. Jinja's sandbox answers a forbidden attribute with an undefined value that prints as
    nothing; here it is an error, so a probing template is refused rather than half-rendered.
    """

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationTag])
        self.deadline = float("inf")
        self.filters["tojson"] = _tojson
        self.filters = {name: _bounded_filter(function, name) for name, function in self.filters.items()}
        self.globals.pop("lipsum", None)
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise _TemplateTimeout

    def trace_calls(self, frame: FrameType, event: str, arg: Any) -> Any:
        """sys.settrace hook: trace lines only inside compiled template code."""
        if frame.f_code.co_filename == "<template>":
            return self._trace_lines
        return None

    def _trace_lines(self, frame: FrameType, event: str, arg: Any) -> Any:
        self.check_deadline()
        return self._trace_lines

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object")

    def bounded_concat(self, parts: Sequence[Any]) -> str:
        texts = [str(part) for part in parts]
        if sum(map(len, texts)) > MAX_OUTPUT_CHARS:
            raise SecurityError("concatenation too large")
        return "".join(texts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_OUTPUT_CHARS:
                    raise SecurityError("repetition too large")
        if operator == "%":
            _check_format_widths(left)
            for value in right if isinstance(right, tuple) else (right,):
                _check_size(value)
        result = super().call_binop(context, operator, left, right)
        _check_size(result)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        for value in (*args, *kwargs.values()):
            _check_size(value)
        _check_format_widths(_format_string_of(__obj))
        result = super().call(__context, __obj, *args, **kwargs)
        _check_size(result)
        return result


def alternating_turns(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with empty assistant messages left out and each run of user (or of assistant) messages
    joined into one, a blank line between their texts: the user said both, and the model answers both."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "assistant" and not message["content"]:
            continue
        last = turns[-1] if turns else None
        if last is not None and last["role"] == message["role"] in ("user", "assistant"):
            turns[-1] = {**last, "content": f"{last['content']}\n\n{message['content']}"}
        else:
            turns.append(dict(message))
    return turns


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    """A compiled chat template; `render` returns the prompt text for a conversation."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str, origin: str) -> None:
        self.source = source
        self.origin = origin
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._env = _BoundedSandbox()
        try:
            self._template = self._env.from_string(source)
        except TemplateSyntaxError as exc:
            raise EdgeAIError(
                f"the chat template of {origin} is invalid (line {exc.lineno}: {exc.message}); "
                "fix the file's tokenizer.chat_template or re-convert the model"
            ) from None

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        self._env.deadline = time.monotonic() + RENDER_SECONDS
        parts: list[str] = []
        size = 0
        previous_trace = sys.gettrace()
        sys.settrace(self._env.trace_calls)
        try:
            for chunk in self._template.generate(
                messages=alternating_turns(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            ):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise UnsafeTemplateError(
                        f"the chat template of {self.origin} produced over {MAX_OUTPUT_CHARS} characters; refused")
                parts.append(chunk)
                self._env.check_deadline()
        except _TemplateTimeout:
            raise UnsafeTemplateError(
                f"the chat template of {self.origin} ran for over {RENDER_SECONDS:.0f} s (a runaway loop?); refused"
            ) from None
        except SecurityError as exc:
            raise UnsafeTemplateError(
                f"the chat template of {self.origin} tried something unsafe ({exc}); refused: use a trusted model file"
            ) from None
        except RecursionError:
            raise UnsafeTemplateError(f"the chat template of {self.origin} recursed without end; refused") from None
        except (MemoryError, OverflowError):
            raise UnsafeTemplateError(f"the chat template of {self.origin} tried to build a giant string; refused") from None
        except TemplateError as exc:
            raise EdgeAIError(f"the chat template of {self.origin} failed: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as exc:
            raise EdgeAIError(f"the chat template of {self.origin} failed ({type(exc).__name__}: {exc})") from None
        finally:
            sys.settrace(previous_trace)
            self._env.deadline = float("inf")
        return "".join(parts)

"""The engine on a tiny real GGUF: it uses the file's chat template, falls back to ChatML without
one, and refuses hostile or broken templates with an EdgeAIError instead of hanging or crashing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest
from event_stream import run
from tiny_gguf import write_tiny_llama

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import check_gguf
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import SamplingParams

OPTIONS = EngineOptions(context=256, threads=1, batch=64)
GREEDY = SamplingParams(temperature=0.0, max_tokens=8)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
MARKED_TEMPLATE = (
    "{% for m in messages %}"
    "<|im_start|>{{ m.role }}[MARK]\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant[MARK]\n{% endif %}"
)


def load(path: Path) -> Engine:
    return Engine(path, options=OPTIONS)


@pytest.fixture
def engine_for(tmp_path: Path) -> Iterator:
    """engine_for(name, **write_tiny_llama kwargs) -> an Engine on a fresh tiny model, closed afterwards."""
    engines: list[Engine] = []

    def make(name: str, **kwargs) -> Engine:
        engine = load(write_tiny_llama(tmp_path / name, **kwargs))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def test_tiny_model_loads_and_generates_in_plain_llama_cpp(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "plain.gguf")
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=False)
    try:
        ids = llm.tokenize(b"<|im_start|>user\n the<|im_end|>", add_bos=False, special=True)
        # control tokens parsed whole, bytes as byte tokens, " the" merged by the BPE merges into one token
        assert len(ids) == 8 and ids[0] == llm.tokenize(b"<|im_start|>", add_bos=False, special=True)[0]
        assert ids[-1] == llm.token_eos() and llm.detokenize(ids[6:7]) == b" the"
        out = llm("the", max_tokens=4, temperature=0)
        assert out["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


def test_engine_renders_with_the_files_template_and_chats(engine_for) -> None:
    engine = engine_for("marked.gguf", chat_template=MARKED_TEMPLATE)
    assert engine.template.origin == "marked.gguf"
    prompt = engine.render(MESSAGES)
    assert prompt == (
        "<|im_start|>system[MARK]\nBe brief.<|im_end|>\n"
        "<|im_start|>user[MARK]\nHello there<|im_end|>\n"
        "<|im_start|>assistant[MARK]\n"
    )
    im_start = engine.tokenize("<|im_start|>")
    assert len(im_start) == 1 and engine.encode(MESSAGES).count(im_start[0]) == 3
    texts, done = run(engine.chat(MESSAGES, GREEDY))
    assert done.reason in ("stop", "length")
    assert "".join(texts) == done.text
    assert 0 < done.metrics.prompt_tokens == len(engine.encode(MESSAGES))
    assert done.metrics.generated_tokens <= GREEDY.max_tokens


def test_instruction_tuned_file_without_template_gets_chatml(engine_for) -> None:
    engine = engine_for("plain-instruct.gguf", extra_metadata={"general.name": "tiny-llama-instruct"})
    assert "chatml" in engine.template.origin
    prompt = engine.render(MESSAGES)
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    # ChatML's turn markers end a reply even though the file does not mark them end-of-generation.
    markers = {engine.tokenize(m)[0] for m in ("<|im_start|>", "<|im_end|>")}
    assert engine._turn_marker_ids == markers
    _, done = run(engine.chat(MESSAGES, GREEDY))
    assert done.reason in ("stop", "length")


def test_base_file_without_template_gets_the_transcript(engine_for) -> None:
    engine = engine_for("plain.gguf")
    assert engine.chat_format.kind == "transcript" and "transcript" in engine.template.origin
    assert engine.render(MESSAGES).endswith("User: Hello there\nAssistant:") and not engine._turn_marker_ids


@pytest.mark.parametrize("name, template, why", [
    ("hostile.gguf", "{{ messages.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("loop.gguf", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "runaway loop"),
])
def test_hostile_template_refuses_the_file_at_load(tmp_path: Path, name: str, template: str, why: str) -> None:
    path = write_tiny_llama(tmp_path / name, chat_template=template)
    with pytest.raises(EdgeAIError, match=why) as info:
        load(path)
    assert name in str(info.value)


def test_template_failing_only_for_some_conversations_loads_and_reports_per_chat(engine_for) -> None:
    picky = ("{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message is required') }}"
             "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
             "{% endfor %}<|im_start|>assistant\n")
    engine = engine_for("picky.gguf", chat_template=picky)
    with pytest.raises(EdgeAIError, match="a system message is required"):
        next(iter(engine.chat([{"role": "user", "content": "hi"}], GREEDY)))
    _, done = run(engine.chat([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}], GREEDY))
    assert done.reason in ("stop", "length")


def test_template_syntax_error_is_a_clear_one_line_error(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "broken.gguf", chat_template="{% for m in messages %}{{ m.content }}")
    with pytest.raises(EdgeAIError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message, f"multi-line error: {message!r}"
    assert "broken.gguf" in message and "chat template" in message and "invalid" in message, message


def test_a_broken_named_template_is_named_too(tmp_path: Path) -> None:
    """llama-cpp-python compiles every `tokenizer.chat_template.NAME` at load; a broken one must
    not surface as a bare "could not load"."""
    path = write_tiny_llama(tmp_path / "named.gguf", chat_template=MARKED_TEMPLATE,
                            extra_metadata={"tokenizer.chat_template.tool_use": "{% if tools %}"})
    with pytest.raises(EdgeAIError, match=r"named.gguf \(tokenizer.chat_template.tool_use\) is invalid"):
        load(path)


def test_hf_template_features_tojson_and_generation_tag(engine_for) -> None:
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}"
                "{% else %}{{ m | tojson(ensure_ascii=False) }}{% endif %}<|im_end|>\n{% endfor %}")
    engine = engine_for("hf.gguf", chat_template=template)
    text = engine.render([{"role": "user", "content": "héllo <b>"}, {"role": "assistant", "content": "ok"}])
    assert '{"role": "user", "content": "héllo <b>"}' in text and "<|im_start|>assistant\nok<|im_end|>" in text


def test_nan_norm_epsilon_is_refused_before_llama_cpp(tmp_path: Path) -> None:
    key = "llama.attention.layer_norm_rms_epsilon"
    path = write_tiny_llama(tmp_path / "nan.gguf", extra_metadata={key: float("nan")})
    with pytest.raises(EdgeAIError, match=key) as info:
        check_gguf(path)
    assert "nan.gguf" in str(info.value)
    with pytest.raises(EdgeAIError, match=key):
        load(path)  # refused by the same check, before llama.cpp could abort on the first decode

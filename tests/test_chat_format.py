"""How a model is prompted: its template, a built-in turn format, or a transcript for base models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import edge_ai
from tiny_gguf import vocabulary, write_tiny_llama

from edge_ai import registry
from edge_ai.chat_format import choose_format, instruction_tuned
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def tiny(tmp_path: Path, name: str = "tiny-llama", *, template: str | None = None, chatml: bool = True) -> Path:
    extra: dict[str, object] = {"general.name": name}
    if not chatml:  # the same vocabulary with the ChatML control tokens renamed
        tokens = [t.replace("<|im_", "<|turn_") for t in vocabulary()[0]]
        extra["tokenizer.ggml.tokens"] = tokens
    return write_tiny_llama(tmp_path / f"{name}.gguf", chat_template=template, extra_metadata=extra)


def test_default_base_model_gets_the_transcript(model_path: Path) -> None:
    choice = choose_format(read_gguf(model_path))
    assert choice.kind == "transcript" and "base model" in choice.reason


def test_a_template_wins(tmp_path: Path) -> None:
    assert choose_format(read_gguf(tiny(tmp_path, template=TEMPLATE))).kind == "template"


def test_instruction_tuned_without_template_gets_its_family_format(tmp_path: Path) -> None:
    choice = choose_format(read_gguf(tiny(tmp_path, "tiny-llama-instruct")))
    assert (choice.kind, choice.builtin, choice.label) == ("builtin", "chatml", "built-in (chatml)")


def test_no_template_and_no_chatml_tokens_never_falls_back_to_chatml(tmp_path: Path) -> None:
    choice = choose_format(read_gguf(tiny(tmp_path, "tiny-llama-instruct", chatml=False)))
    assert choice.kind == "transcript" and "no known turn tokens" in choice.reason


@pytest.mark.parametrize(("name", "tuned"), [
    ("gemma-3-270m-it", True), ("Qwen2.5-0.5B-Instruct", True), ("llama-2-7b-chat", True), ("zephyr_sft", True),
    ("gemma-3-270m", False), ("titan-7b", False), ("chatterbox", False), ("Qwen2.5-0.5B", False),
])
def test_instruction_tuned_names(tmp_path: Path, name: str, tuned: bool) -> None:
    assert instruction_tuned(read_gguf(tiny(tmp_path, name))) is tuned


def test_forcing_a_format(tmp_path: Path) -> None:
    plain = read_gguf(tiny(tmp_path, chatml=False))
    assert choose_format(plain, "transcript").kind == "transcript"
    with pytest.raises(EdgeAIError, match="has no chat template"):
        choose_format(plain, "template")
    with pytest.raises(EdgeAIError, match="no built-in chat format fits"):
        choose_format(plain, "builtin")
    with pytest.raises(EdgeAIError, match="unknown chat format 'fancy'"):
        choose_format(plain, "fancy")
    assert choose_format(read_gguf(tiny(tmp_path, "with-chatml")), "builtin").builtin == "chatml"


def test_registry_stores_a_forced_format(tmp_path: Path) -> None:
    path = tiny(tmp_path, "tiny-llama-instruct")
    registry.add(path, "helper", chat_format="transcript")
    registry.add(path, "plain")
    assert registry.chat_format("helper") == "transcript" and registry.chat_format("plain") == "auto"
    with pytest.raises(EdgeAIError, match="has no chat template"):
        registry.add(path, "broken", chat_format="template")
    assert "broken" not in registry.known_names()


def test_models_toml_with_a_bad_format_is_one_clear_error(tmp_path: Path) -> None:
    from edge_ai.paths import get_paths

    models_file = get_paths().models_file
    models_file.parent.mkdir(parents=True, exist_ok=True)
    models_file.write_text(f'[models.x]\npath = "{tiny(tmp_path)}"\nformat = "fancy"\n')
    with pytest.raises(EdgeAIError, match="malformed entries \\(x\\).*format"):
        registry.chat_format("x")


def test_models_list_and_info_show_the_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny(tmp_path, "tiny-llama-instruct")
    assert "format: built-in (chatml)" in edge_ai("models", "add", str(path), "--name", "t").stdout
    rows = json.loads(edge_ai("models", "list", "--json").stdout)
    assert [r["format"] for r in rows if r["name"] == "t"] == ["built-in (chatml)"]
    assert "built-in (chatml)" in edge_ai("models", "list").stdout
    info = json.loads(edge_ai("models", "info", "t", "--json").stdout)["summary"]
    assert info["format"] == "built-in (chatml)" and "instruction-tuned" in info["format_reason"]
    monkeypatch.setenv("EDGE_AI_MODEL_FORMAT", "transcript")
    forced = json.loads(edge_ai("models", "info", "t", "--json").stdout)["summary"]
    assert forced["format"] == "transcript" and forced["format_reason"].startswith("forced")

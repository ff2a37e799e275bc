"""Chat templates: built-in formats and the bounded sandbox for templates shipped in GGUF files."""

from __future__ import annotations

import pytest

from edge_ai.errors import EdgeAIError
from runtime.llm.templates import CHATML, GEMMA, TRANSCRIPT, TRANSCRIPT_EXAMPLES, ChatTemplate

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]


def render(source: str, messages=CONVERSATION) -> str:
    return ChatTemplate(source, bos_token="<s>", eos_token="</s>", origin="test.gguf").render(messages)


def test_gemma_format_folds_system_into_first_user_turn() -> None:
    text = ChatTemplate(GEMMA.template, bos_token="<bos>", eos_token="<eos>", origin="x").render(CONVERSATION)
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                    "<start_of_turn>model\nHello!<end_of_turn>\n"
                    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")


def test_chatml_format() -> None:
    text = render(CHATML.template)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\n")


def test_transcript_format_for_base_models() -> None:
    examples = "".join(f"User: {q}\nAssistant: {a}\n\n" for q, a in TRANSCRIPT_EXAMPLES)
    assert render(TRANSCRIPT.template) == (
        "Be brief.\n\n" + examples + "User: Hi\nAssistant: Hello!\n\nUser: Bye\nAssistant:")
    assert render(TRANSCRIPT.template, CONVERSATION[1:2]) == examples + "User: Hi\nAssistant:"
    assert TRANSCRIPT.stops == ("\nUser:", "\n\n") and TRANSCRIPT.strip_leading


def test_hf_style_template_with_raise_exception_and_loop_controls() -> None:
    source = ("{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
              "[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
              "{% if messages[-1]['role'] != 'user' %}{{ raise_exception('last must be user') }}{% endif %}")
    assert render(source) == "[user]Hi[assistant]Hello![user]Bye"
    with pytest.raises(EdgeAIError, match="last must be user"):
        render(source, CONVERSATION[:3])


# a Llama 2 / Mistral style template: it refuses a conversation whose roles do not alternate
STRICT = ("{% for m in messages %}"
          "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}{{ m['content'] }}</s>{% endif %}"
          "{% endfor %}")


def test_a_reply_stopped_before_its_first_word_leaves_turns_that_alternate() -> None:
    """A barge-in while the model thinks leaves an empty reply (voice) or none (the app leaves stopped empty
    replies out) between two questions: both are one user turn, and a strict template renders it."""
    with pytest.raises(EdgeAIError, match="must alternate"):
        render(STRICT, [{"role": "assistant", "content": "Hi"}])  # the template is as strict as it looks
    empty_reply = [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": ""},
                   {"role": "user", "content": "What is the capital of Italy?"}]
    no_reply = [empty_reply[0], empty_reply[2]]
    expected = "[INST] Tell me a story.\n\nWhat is the capital of Italy? [/INST]"
    assert render(STRICT, empty_reply) == render(STRICT, no_reply) == expected
    assert render(STRICT, CONVERSATION[1:]) == "[INST] Hi [/INST]Hello!</s>[INST] Bye [/INST]"  # as it was


@pytest.mark.parametrize("source, why", [
    ("{{ messages.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{{ cycler.__init__.__globals__.os.system('true') }}", "unsafe"),
    ("{{ 'x' * 10000000000 }}", "unsafe"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "runaway"),
    ("{% for i in 'x' * 3000000 %}{% for j in 'x' * 3000000 %}{% endfor %}{% endfor %}", "runaway"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursed"),
    ("{{ messages.__class__ }}", "unsafe.*__class__"),
    ("{% if messages.__class__ %}x{% endif %}", "unsafe.*__class__"),
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "unsafe.*too large"),
    ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "unsafe.*too large"),
    ("{{ range(10**8) | list | length }}", "unsafe.*too large"),
    ("{{ 'x'.ljust(10**9) }}", "unsafe.*too large"),
    ("{{ '' | center(10**9) }}", "unsafe.*too large"),
    ("{{ '%1000000000d' % 1 }}", "unsafe.*format width"),
    ("{{ '%.1000000000f' % 1.5 }}", "unsafe.*format width"),
    ("{{ '{:>1000000000}'.format(1) }}", "unsafe.*format width"),
    ("{{ '%1000000000s' | format('x') }}", "unsafe.*format width"),
])
def test_hostile_templates_are_refused(source: str, why: str) -> None:
    with pytest.raises(EdgeAIError, match=why) as info:
        render(source)
    assert "test.gguf" in str(info.value)


def test_invalid_template_names_the_line() -> None:
    with pytest.raises(EdgeAIError, match="invalid.*line 1"):
        ChatTemplate("{% for m in messages %}", bos_token="", eos_token="", origin="bad.gguf")


def test_giant_strings_are_refused_not_a_crash() -> None:
    with pytest.raises(EdgeAIError, match="too large"):
        render("{{ '' | center(10**13) }}")


def test_bounds_leave_ordinary_template_code_alone() -> None:
    source = ("{% set ns = namespace(text='') %}{% for m in messages %}"
              "{% set ns.text = ns.text ~ m['role'] ~ ':' ~ m['content'] ~ ';' %}{% endfor %}"
              "{{ ns.text + '|' + (messages | map(attribute='content') | join(',')) | upper }}"
              "{{ '-' * 3 }}{{ messages | length }}{{ messages[0] | tojson }}"
              "{{ ' %5.1f%%' % 12.345 }}{{ ' {:>4}'.format(7) }}{{ ' %s-%d' | format('a', 2) }}")
    assert render(source) == ('system:Be brief.;user:Hi;assistant:Hello!;user:Bye;|BE BRIEF.,HI,HELLO!,BYE'
                              '---4{"role": "system", "content": "Be brief."}  12.3%    7 a-2')

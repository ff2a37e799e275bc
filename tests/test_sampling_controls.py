"""The engine's sampler chain on the real default model: grammar-constrained JSON, logit bias,
OpenAI's penalties and per-token log-probabilities."""

from __future__ import annotations

import dataclasses
import json
import math

import jsonschema
import pytest
from event_stream import run

from edge_ai.errors import EdgeAIError
from runtime.llm.engine import Engine
from runtime.llm.events import SamplingParams, TokenEvent
from runtime.llm.grammar import SchemaError, json_grammar

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 24},
        "country": {"type": "string", "maxLength": 24},
        "population": {"type": "integer"},
        "capital": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["old", "big", "coastal"]}, "maxItems": 3},
        "founded": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
    },
    "required": ["city", "country", "population", "capital"],
    "additionalProperties": False,
}
PROMPT = "Facts about Paris as JSON:"


@pytest.mark.parametrize("seed", range(3))
def test_hot_sampling_under_a_schema_grammar_always_gives_valid_json(engine: Engine, seed: int) -> None:
    """Temperature 1.5 with no top-k: the model alone would write anything; the grammar makes
    every reply parse and validate, ending on its own well before max_tokens."""
    sampling = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=seed, max_tokens=200,
                              grammar=json_grammar(CITY))
    _, done = run(engine.complete(PROMPT, sampling))
    assert done.reason == "stop", done.text
    jsonschema.validate(json.loads(done.text), CITY)
    assert "\n" not in done.text  # one line: a transcript's stop strings cannot cut it


def test_any_json_object_when_no_schema(engine: Engine) -> None:
    sampling = SamplingParams(temperature=1.0, seed=3, max_tokens=200, grammar=json_grammar())
    _, done = run(engine.complete("A JSON object:", sampling))
    assert done.reason == "stop" and isinstance(json.loads(done.text), dict)


def test_without_the_grammar_the_model_does_not_write_json(engine: Engine) -> None:
    """The control for the tests above: the same prompt, unconstrained, is not valid JSON."""
    sampling = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=0, max_tokens=60)
    _, done = run(engine.complete(PROMPT, sampling))
    with pytest.raises((ValueError, jsonschema.ValidationError)):
        jsonschema.validate(json.loads(done.text), CITY)


@pytest.mark.parametrize(("schema", "named"), [
    ({"type": "integer", "minimum": 3}, "schema: the keyword 'minimum'"),
    ({"type": "string", "pattern": "^a+$"}, "schema: the keyword 'pattern'"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}}, "schema.properties.a: the keyword 'oneOf'"),
    ({"type": "string", "format": "email"}, "schema.format: 'email' is not supported"),
    ({"type": "object", "properties": {}, "required": ["a"]}, "schema.required: a must also be listed"),
    ({"type": "array", "minItems": 2}, "minItems and maxItems need an items schema"),
    ({"type": "thing"}, "schema.type: unknown type 'thing'"),
    ({"$ref": "https://example.com/s.json"}, "cannot be turned into a grammar"),
])
def test_schemas_the_grammar_cannot_enforce_are_refused_by_name(schema: dict, named: str) -> None:
    with pytest.raises(SchemaError, match=named):
        json_grammar(schema)


def test_a_grammar_llama_cpp_cannot_parse_is_one_clear_error(engine: Engine) -> None:
    with pytest.raises(EdgeAIError, match="llama.cpp could not parse the grammar; check it"):
        run(engine.complete("x", SamplingParams(grammar='root ::= "a" (', max_tokens=2)))
    assert run(engine.complete("The sky is", SamplingParams(temperature=0, max_tokens=2)))[1].text  # still fine


def first_token(engine: Engine, prompt: str, **sampling: object) -> int:
    done = run(engine.complete(prompt, SamplingParams(temperature=0, max_tokens=1, **sampling)))[1]
    ids = engine.tokenize(done.text, special=False)
    assert len(ids) == 1, f"{done.text!r} is not one token: pick another prompt"
    return ids[0]


def test_logit_bias_bans_and_forces_tokens(engine: Engine) -> None:
    prompt = "The capital of France is"
    greedy = first_token(engine, prompt)
    banned = first_token(engine, prompt, logit_bias=((greedy, -100.0),))
    assert banned != greedy
    forced_id = engine.tokenize(" banana", special=False)
    assert len(forced_id) == 1
    forced = run(engine.complete(prompt, SamplingParams(temperature=0.8, seed=1, max_tokens=3,
                                                        logit_bias=((forced_id[0], 100.0),))))[1]
    assert forced.text == " banana" * 3
    with pytest.raises(EdgeAIError, match="logit_bias names token 999999999"):
        run(engine.complete(prompt, SamplingParams(logit_bias=((999_999_999, 1.0),))))


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
def test_openai_penalties_reach_the_sampler(engine: Engine, penalty: str) -> None:
    greedy = {"temperature": 0.0, "repeat_penalty": 1.0, "max_tokens": 16}
    plain = run(engine.complete("Once upon a time", SamplingParams(**greedy)))[1].text
    penalised = run(engine.complete("Once upon a time", SamplingParams(**greedy, **{penalty: 2.0})))[1].text
    assert penalised != plain


def test_logprobs_are_the_models_and_cover_the_reply_exactly(engine: Engine) -> None:
    sampling = SamplingParams(temperature=0, repeat_penalty=1.0, max_tokens=12, logprobs=4)
    events = list(engine.complete("Once upon a time", sampling))
    tokens = [t for e in events if isinstance(e, TokenEvent) for t in e.logprobs]
    text = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert b"".join(t.token for t in tokens).decode() == text
    for t in tokens:
        assert len(t.top) == 4 and [lp for _, lp in t.top] == sorted((lp for _, lp in t.top), reverse=True)
        assert t.top[0] == (t.token, t.logprob)  # greedy took the likeliest token
        assert sum(math.exp(lp) for _, lp in t.top) <= 1.0 + 1e-6
    assert all(not e.logprobs for e in run_plain(engine))


def run_plain(engine: Engine) -> list[TokenEvent]:
    """With logprobs unset, no event carries any."""
    return [e for e in engine.complete("Once upon a time", SamplingParams(temperature=0, max_tokens=4))
            if isinstance(e, TokenEvent)]


def test_a_stop_string_keeps_the_tokens_that_reached_the_shown_text(engine: Engine) -> None:
    sampling = SamplingParams(temperature=0, repeat_penalty=1.0, max_tokens=24, logprobs=0)
    full = run(engine.complete("One, two, three, four,", sampling))[1].text
    stop = full.split()[1]  # cut the reply at its second word
    events = list(engine.complete("One, two, three, four,", dataclasses.replace(sampling, stop=(stop,))))
    text = "".join(e.text for e in events if isinstance(e, TokenEvent))
    joined = b"".join(t.token for e in events if isinstance(e, TokenEvent) for t in e.logprobs).decode()
    assert text == full[:full.index(stop)]
    assert joined.startswith(text) and len(joined) < len(full)

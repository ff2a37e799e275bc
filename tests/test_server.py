"""The OpenAI-compatible server on the real default model, driven by the official `openai` client
against real uvicorn servers in background threads."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import uvicorn
from fastapi import FastAPI
from rich.console import Console

from edge_ai.config import Config
from edge_ai.errors import EdgeAIError
from runtime.llm.templates import TRANSCRIPT
from runtime.server import create_app, serve

MODEL = "gemma3-270m"
QUESTION = [{"role": "user", "content": "Name three colours."}]
# A reply that runs long whatever the chat format: a plain completion that keeps counting
# (the default base model's chat replies end at their first blank line).
LONG_REPLY = {"model": MODEL, "max_tokens": 2000, "temperature": 0, "prompt": "Numbers: 1, 2, 3, 4, 5, 6,"}
COUNTING = [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]
# Built from defaults only: module fixtures run outside the per-test EDGE_AI_HOME isolation.
SERVER_CFG = Config().with_values({"server.queue_size": 1, "sampling.max_tokens": 8, "sampling.temperature": 0})


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port in a thread; yield its /v1 base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def base_url(engine: Any) -> Iterator[str]:
    with running(create_app(SERVER_CFG, engine)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    # Generous timeout: a hang still fails, but a CPU shared with other llama.cpp jobs may be slow.
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == MODEL
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streamed_chat_matches_whole_reply(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_unset_sampling_comes_from_config_and_text_parts_are_read(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": "Tell me a long story."}]}])
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= SERVER_CFG.sampling.max_tokens
    assert reply.choices[0].finish_reason == "length"


def test_completions_whole_and_streamed(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}
    whole = client.completions.create(**args)
    assert whole.object == "text_completion" and whole.choices[0].text.strip()
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    chunks = list(client.completions.create(**args, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_models_and_wrong_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError, match=MODEL):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=4)


def test_too_long_message_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="too long") as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 3000}],
                                       max_tokens=8, stream=True)
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]


def test_invalid_requests_get_openai_errors(base_url: str) -> None:
    bad_json = httpx.post(f"{base_url}/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    bad_field = httpx.post(f"{base_url}/chat/completions", json={"messages": QUESTION, "temperature": -1})
    assert bad_field.status_code == 400 and "temperature" in bad_field.json()["error"]["message"]


def test_api_key_is_required_when_set(engine: Any) -> None:
    cfg = SERVER_CFG.with_values({"server.api_key": "s3cret"})
    with running(create_app(cfg, engine)) as url:
        anonymous = httpx.get(f"{url}/models")
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0, timeout=10).models.list()
        assert [m.id for m in openai.OpenAI(base_url=url, api_key="s3cret", timeout=10).models.list()] == [MODEL]
        for path in ("/chat/completions", "/completions"):
            assert httpx.post(f"{url}{path}", json={"prompt": "x", "messages": []}).status_code == 401
        health = httpx.get(url.removesuffix("/v1") + "/health")  # supervisors need no key
        assert health.status_code == 200 and health.json() == {"status": "ok", "model": MODEL}


def test_burst_gets_answers_or_clean_429s(client: openai.OpenAI) -> None:
    outcomes: list[object] = []

    def ask() -> None:
        try:
            outcomes.append(client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24))
        except Exception as exc:  # recorded and checked below
            outcomes.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert len(outcomes) == 6, "a request hung"
    answers = [o for o in outcomes if isinstance(o, openai.types.chat.ChatCompletion)]
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert len(answers) + len(refused) == 6, outcomes
    assert answers and refused
    assert all(a.choices[0].message.content for a in answers)
    assert all(r.response.headers["retry-after"] and r.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
               for r in refused)


def wait_until(condition: Any, what: str, seconds: float = 60) -> None:
    """Poll `condition` (a bound against hangs, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "whole"])
def test_client_leaving_cancels_the_reply(stream: bool, base_url: str, client: openai.OpenAI, engine: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    endings: list[Any] = []
    original = engine.complete

    def recording(*args: Any, **kwargs: Any) -> Iterator[Any]:
        """The real engine's reply, passed through; its last event (the DoneEvent) is kept."""
        event = None
        for event in original(*args, **kwargs):
            yield event
        endings.append(event)

    monkeypatch.setattr(engine, "complete", recording)
    body = {**LONG_REPLY, "stream": stream}
    if stream:
        with httpx.Client(timeout=30) as http, http.stream("POST", f"{base_url}/completions", json=body) as r:
            assert r.status_code == 200
            data_lines = (line for line in r.iter_lines() if line.startswith("data: "))
            for _ in range(4):
                next(data_lines)
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base_url}/completions", json=body, timeout=httpx.Timeout(30, read=1))
    wait_until(lambda: endings, "the abandoned reply to end")
    assert endings[0].reason == "cancelled", "the engine was not stopped after the client left"
    assert endings[0].metrics.generated_tokens < 2000
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    assert reply.choices[0].message.content is not None


def test_a_request_abandoned_in_the_queue_frees_its_place(base_url: str, client: openai.OpenAI) -> None:
    """queue_size 1: A runs, B waits and its client gives up; C must then wait, not get a 429."""
    short = {"model": MODEL, "messages": QUESTION, "max_tokens": 4}
    with httpx.Client(timeout=30) as http, \
            http.stream("POST", f"{base_url}/completions", json={**LONG_REPLY, "stream": True}) as a:
        assert a.status_code == 200
        data_lines = (line for line in a.iter_lines() if line.startswith("data: "))
        for _ in range(3):
            next(data_lines)  # A holds the engine
        with pytest.raises(httpx.ReadTimeout):  # B: queued behind A, then its client times out
            httpx.post(f"{base_url}/chat/completions", json=short, timeout=httpx.Timeout(30, read=1))
        # The server notices B leaving a moment later; until then C may still be refused.
        deadline = time.monotonic() + 20
        while True:
            try:
                c = httpx.post(f"{base_url}/chat/completions", json=short, timeout=httpx.Timeout(30, read=1))
            except httpx.ReadTimeout:
                break  # C was admitted and waits behind A (then leaves as well)
            if c.status_code != 429:
                break
            assert time.monotonic() < deadline, "C got 429 although B had left the queue and nobody waited"
            time.sleep(0.05)
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    assert reply.choices[0].message.content is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ctrl_c_ends_open_streams_and_exits_cleanly(registered_model: Any) -> None:
    """The real `edge-ai serve`: SIGINT during a streamed reply ends the stream with an OpenAI error
    chunk and exits like `ask` on Ctrl-C (130), printing nothing but the normal lines."""
    port = free_port()
    env = {**os.environ, "EDGE_AI_MODEL_THREADS": "1", "EDGE_AI_MODEL_CONTEXT": "1024"}
    proc = subprocess.Popen([sys.executable, "-m", "edge_ai", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    lines: list[str | Exception] = []

    def up() -> bool:
        assert proc.poll() is None, proc.communicate()
        try:
            return httpx.get(f"{url}/models", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def read_stream() -> None:
        try:
            with httpx.stream("POST", f"{url}/completions", json={**LONG_REPLY, "stream": True},
                              timeout=60) as r:
                lines.extend(line for line in r.iter_lines() if line.startswith("data: "))
        except Exception as exc:  # checked below: the stream must end cleanly
            lines.append(exc)

    reader = threading.Thread(target=read_stream, daemon=True)
    try:
        wait_until(up, "the server to start", seconds=120)
        reader.start()
        wait_until(lambda: len(lines) >= 3, "the first chunks")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        reader.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    for noise in ("Traceback", "Exception", "ERROR", "graceful shutdown"):
        assert noise not in stderr, stderr
    assert stderr.strip().splitlines() == [f"serving {MODEL} on {url}"]
    last = lines[-1]
    assert isinstance(last, str), f"the stream broke off: {last!r}"
    assert json.loads(last.removeprefix("data: "))["error"]["code"] == "server_shutting_down"


def test_serve_refuses_a_busy_port(engine: Any) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        cfg = Config().with_values({"server.port": port})
        expected = f"port {port} on 127.0.0.1 is already in use; pass --port or stop the other server"
        with pytest.raises(EdgeAIError, match=expected):
            serve(cfg, lambda: pytest.fail("the model loaded although the port is busy"),
                  log=Console(file=io.StringIO()))


def test_edge_ai_serve_on_a_busy_port_says_so_before_loading(edge_home: Path) -> None:
    """The real command: one error line and exit 1, even with a model name that cannot resolve
    (the port is checked before any model is looked at)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "edge_ai", "serve", "--port", str(port), "-m", "no-such-model"],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use; pass --port or stop the other server"]


# ----------------------------------------------------------------------------- what the request says

GREEDY = {"model": MODEL, "temperature": 0, "extra_body": {"repeat_penalty": 1.0}}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 20},
                   "age": {"type": "integer"},
                   "languages": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}},
    "required": ["name", "age", "languages"],
    "additionalProperties": False,
}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
DESCRIBE = [{"role": "user", "content": "Describe a person."}]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streaming"])
def test_json_schema_reply_parses_and_validates(client: openai.OpenAI, stream: bool) -> None:
    args: dict[str, Any] = {"model": MODEL, "messages": DESCRIBE, "response_format": PERSON_FORMAT,
                            "max_tokens": 120, "temperature": 1.0, "seed": 5}
    if stream:
        chunks = list(client.chat.completions.create(**args, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = chunks[-1].choices[0].finish_reason
    else:
        choice = client.chat.completions.create(**args).choices[0]
        text, finish = choice.message.content or "", choice.finish_reason
    assert finish == "stop", text
    jsonschema.validate(json.loads(text), PERSON)


def test_json_object_reply_is_an_object(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=DESCRIBE, response_format={"type": "json_object"},
                                           max_tokens=150, temperature=0.8, seed=2)
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_a_schema_the_grammar_cannot_enforce_is_a_400_naming_it(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}
    with pytest.raises(openai.BadRequestError, match="properties.age: the keyword 'minimum'") as caught:
        client.chat.completions.create(model=MODEL, messages=DESCRIBE, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert caught.value.body["param"] == "response_format"  # type: ignore[index]


def tokens_cover(tokens: list[Any], text: str) -> bool:
    """The tokens' bytes spell the reply: up to the space the transcript format drops before it, and
    the part of a stop string the last token ran on into (TokenEvent's docstring)."""
    spelled = b"".join(bytes(t.bytes or []) for t in tokens).decode().removeprefix(" ")
    rest = spelled[len(text):]
    return spelled.startswith(text) and (not rest or any(rest.startswith(s) or s.startswith(rest)
                                                         for s in TRANSCRIPT.stops))


def test_chat_logprobs_whole_and_streamed(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {**GREEDY, "messages": QUESTION, "max_tokens": 10, "logprobs": True, "top_logprobs": 3}
    whole = client.chat.completions.create(**args).choices[0]
    assert whole.logprobs is not None and whole.logprobs.content
    content = whole.logprobs.content
    assert tokens_cover(content, whole.message.content)
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
    chunks = [c for c in client.chat.completions.create(**args, stream=True) if c.choices]
    streamed = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed and tokens_cover(streamed, text)
    assert all(len(t.top_logprobs) == 3 for t in streamed)
    plain = client.chat.completions.create(**{**args, "logprobs": False, "top_logprobs": None}).choices[0]
    assert plain.logprobs is None and plain.message.content


def test_completion_logprobs_in_the_legacy_shape(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    choice = client.completions.create(**GREEDY, prompt=prompt, max_tokens=6, logprobs=2).choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset[0] == len(prompt)
    assert all(b - a == len(t) for a, b, t in zip(lp.text_offset, lp.text_offset[1:], lp.tokens))
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 2 and max(top.values()) == pytest.approx(logprob) and top[token] == pytest.approx(logprob)


def test_logit_bias_bans_the_greedy_token_and_forces_another(client: openai.OpenAI, engine: Any) -> None:
    prompt = "The capital of France is"
    greedy = client.completions.create(**GREEDY, prompt=prompt, max_tokens=1).choices[0].text
    greedy_id = engine.tokenize(greedy, special=False)
    assert len(greedy_id) == 1
    banned = client.completions.create(**GREEDY, prompt=prompt, max_tokens=1, logit_bias={str(greedy_id[0]): -100})
    assert banned.choices[0].text != greedy
    banana = engine.tokenize(" banana", special=False)
    forced = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, temperature=0.8, seed=3,
                                            logit_bias={str(banana[0]): 100})
    assert forced.choices[0].message.content == "banana banana"  # the transcript drops the reply's leading space


def test_penalties_change_the_reply(client: openai.OpenAI) -> None:
    story = {**GREEDY, "prompt": "Once upon a time", "max_tokens": 16}
    plain = client.completions.create(**story).choices[0].text
    assert client.completions.create(**story, presence_penalty=2.0).choices[0].text != plain
    cats = {**GREEDY, "prompt": "cat cat cat cat cat cat cat cat", "max_tokens": 12}
    repeated = client.completions.create(**cats).choices[0].text.split().count("cat")
    assert client.completions.create(**cats, frequency_penalty=2.0).choices[0].text.split().count("cat") < repeated


def test_seed_repeats_a_hot_reply(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {"model": MODEL, "messages": QUESTION, "max_tokens": 12, "temperature": 1.5,
                            "extra_body": {"top_k": 0, "min_p": 0.0}}
    replies = {seed: client.chat.completions.create(**args, seed=seed).choices[0].message.content
               for seed in (1, 2, 3, 2**40)}
    assert len(set(replies.values())) > 1, "different seeds gave one reply: the test would prove nothing"
    assert client.chat.completions.create(**args, seed=2).choices[0].message.content == replies[2]
    assert client.chat.completions.create(**args, seed=2**40).choices[0].message.content == replies[2**40]


def test_stop_and_max_completion_tokens(client: openai.OpenAI) -> None:
    prompt = "One, two, three, four, five, six,"
    full = client.completions.create(**GREEDY, prompt=prompt, max_tokens=16).choices[0].text
    word = full.split()[1]
    for stop in (word, [word, "never-seen-zzz"]):
        cut = client.completions.create(**GREEDY, prompt=prompt, max_tokens=16, stop=stop).choices[0]
        assert cut.text == full[:full.index(word)] and cut.finish_reason == "stop"
    short = client.chat.completions.create(model=MODEL, messages=QUESTION, max_completion_tokens=3, max_tokens=50)
    assert short.usage is not None and short.usage.completion_tokens == 3
    assert short.choices[0].finish_reason == "length"


@pytest.mark.parametrize(("param", "extra"), [
    ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
    ("tool_choice", {"tool_choice": "auto"}),
    ("functions", {"functions": [{"name": "f"}]}),
    ("n", {"n": 2}),
    ("audio", {"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]}),
    ("messages[0].content[1].type", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
    ("messages[1].role", {"messages": [{"role": "user", "content": "hi"},
                                       {"role": "tool", "tool_call_id": "1", "content": "42"}]}),
])
def test_what_the_server_cannot_do_is_a_400_naming_it(base_url: str, param: str, extra: dict[str, Any]) -> None:
    reply = httpx.post(f"{base_url}/chat/completions", json={"messages": QUESTION, "max_tokens": 2, **extra},
                       timeout=60)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["code"] == "unsupported_parameter" and error["type"] == "invalid_request_error"
    assert param.split("[")[0].split(".")[0] in error["message"]


@pytest.mark.parametrize(("param", "extra"), [("echo", {"echo": True}), ("best_of", {"best_of": 2}),
                                              ("suffix", {"suffix": "end"}), ("prompt", {"prompt": ["a", "b"]})])
def test_completions_refuse_what_they_cannot_do(client: openai.OpenAI, param: str, extra: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(**{"model": MODEL, "prompt": "x", "max_tokens": 2, **extra})
    assert caught.value.body["param"] == param  # type: ignore[index]


def test_unknown_fields_are_ignored(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, user="me",
                                           extra_body={"frobnicate": {"deep": [1]}, "store": True})
    assert reply.choices[0].message.content is not None


@pytest.mark.parametrize(("body", "param", "says"), [
    ({"logit_bias": {"12": 250}}, "logit_bias.12", "less than or equal to 100"),
    ({"logit_bias": {"x": 1}}, "logit_bias.x", "integer"),
    ({"top_logprobs": 2}, "top_logprobs", "set logprobs to true"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
    ({"presence_penalty": 3}, "presence_penalty", "less than or equal to 2"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "json_schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema is required"),
    ({"messages": [{"role": "user"}], "stop": 5}, "stop", "string"),
])
def test_bad_values_are_a_400_naming_the_field(base_url: str, body: dict[str, Any], param: str, says: str) -> None:
    reply = httpx.post(f"{base_url}/chat/completions", json={"messages": QUESTION, "max_tokens": 2, **body}, timeout=60)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and says in error["message"], error


def test_logit_bias_outside_the_vocabulary_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="logit_bias names token 999999999"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, logit_bias={"999999999": 5})


def failing_engine(engine: Any, monkeypatch: pytest.MonkeyPatch, after_tokens: int) -> None:
    """The real engine's reply, broken by a llama.cpp-style failure after `after_tokens` events: the
    way to make the real server meet an internal error on demand."""
    original = engine.chat

    def chat(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for i, event in enumerate(original(*args, **kwargs)):
            if i == after_tokens:
                raise RuntimeError("llama_decode returned -3\n(second line)")
            yield event

    monkeypatch.setattr(engine, "chat", chat)


def test_an_internal_error_is_an_openai_500_with_one_line(client: openai.OpenAI, engine: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    failing_engine(engine, monkeypatch, after_tokens=0)
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as caught:
            list(client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, stream=stream)) \
                if stream else client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)
        error = caught.value.body
        assert error == {"message": "internal error: RuntimeError: llama_decode returned -3", "type": "server_error",
                         "param": None, "code": "internal_error"}, error
    monkeypatch.undo()
    assert client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2).choices[0].message.content


def test_an_error_mid_stream_ends_it_with_an_error_chunk(client: openai.OpenAI, engine: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    failing_engine(engine, monkeypatch, after_tokens=2)
    stream = client.chat.completions.create(model=MODEL, messages=COUNTING, max_tokens=50, stream=True)
    with pytest.raises(openai.APIError, match="internal error: RuntimeError: llama_decode returned -3"):
        for _ in stream:
            pass


def test_serving_the_network_needs_a_key_or_an_explicit_flag(engine: Any) -> None:
    console = Console(file=io.StringIO())
    exposed = Config().with_values({"server.host": "0.0.0.0", "server.port": free_port()})
    with pytest.raises(EdgeAIError, match="refusing to serve on 0.0.0.0 without an API key: anyone on the network"):
        serve(exposed, lambda: pytest.fail("the model loaded"), log=console)
    with socket.socket() as other:  # a busy port shows the check was passed without serving anything
        other.bind(("0.0.0.0", 0))
        other.listen()
        busy = exposed.with_values({"server.port": other.getsockname()[1]})
        for cfg, allow in ((busy, True), (busy.with_values({"server.api_key": "k"}), False)):
            with pytest.raises(EdgeAIError, match="already in use"):
                serve(cfg, lambda: pytest.fail("the model loaded"), log=console, allow_unauthenticated=allow)


def test_edge_ai_serve_on_all_addresses_without_a_key_says_why(edge_home: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "edge_ai", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: refusing to serve on 0.0.0.0 without an API key: anyone on the network could use it; pass "
        "--api-key KEY (clients send it as a bearer token), or --allow-unauthenticated on a network you trust, "
        "or --host 127.0.0.1"]

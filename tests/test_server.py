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
import openai
import pytest
import uvicorn
from fastapi import FastAPI
from rich.console import Console

from edge_ai.config import Config
from edge_ai.errors import EdgeAIError
from runtime.server import create_app, serve

MODEL = "gemma3-270m"
QUESTION = [{"role": "user", "content": "Name three colours."}]
LONG_REPLY = {"model": MODEL, "max_tokens": 2000, "temperature": 0,
              "messages": [{"role": "user", "content": "Count from 1 to 1000, one number per line."}]}
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
    original = engine.chat

    def recording(*args: Any, **kwargs: Any) -> Iterator[Any]:
        """The real engine's reply, passed through; its last event (the DoneEvent) is kept."""
        event = None
        for event in original(*args, **kwargs):
            yield event
        endings.append(event)

    monkeypatch.setattr(engine, "chat", recording)
    body = {**LONG_REPLY, "stream": stream}
    if stream:
        with httpx.Client(timeout=30) as http, http.stream("POST", f"{base_url}/chat/completions", json=body) as r:
            assert r.status_code == 200
            data_lines = (line for line in r.iter_lines() if line.startswith("data: "))
            for _ in range(4):
                next(data_lines)
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base_url}/chat/completions", json=body, timeout=httpx.Timeout(30, read=1))
    wait_until(lambda: endings, "the abandoned reply to end")
    assert endings[0].reason == "cancelled", "the engine was not stopped after the client left"
    assert endings[0].metrics.generated_tokens < 2000
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    assert reply.choices[0].message.content is not None


def test_a_request_abandoned_in_the_queue_frees_its_place(base_url: str, client: openai.OpenAI) -> None:
    """queue_size 1: A runs, B waits and its client gives up; C must then wait, not get a 429."""
    short = {"model": MODEL, "messages": QUESTION, "max_tokens": 4}
    with httpx.Client(timeout=30) as http, \
            http.stream("POST", f"{base_url}/chat/completions", json={**LONG_REPLY, "stream": True}) as a:
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
            with httpx.stream("POST", f"{url}/chat/completions", json={**LONG_REPLY, "stream": True},
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

"""TUI and server logic on the scripted engine (tests/fake_engine.py): fast, no model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import openai
import pytest
from fake_engine import ScriptedEngine
from test_server import running

from edge_ai.config import Config
from runtime.llm.interface import ChatEngine
from runtime.server import create_app

REPLY = "The scripted reply has exactly eight words here."


def test_the_scripted_engine_and_the_real_one_share_the_protocol() -> None:
    from runtime.llm.engine import Engine

    assert isinstance(ScriptedEngine(), ChatEngine)
    assert all(hasattr(Engine, name) for name in ("chat", "complete", "cancel", "close", "context_used"))


def make_app(engine: ScriptedEngine):
    from tui.app import EdgeAIApp

    cfg = Config().with_values({"model.name": "scripted"})
    return EdgeAIApp(cfg, engine_factory=lambda _: engine)


async def wait_for(pilot, condition: Callable[[], object], what: str) -> None:
    for _ in range(400):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_tui_streams_stops_and_retries_on_the_scripted_engine() -> None:
    engine = ScriptedEngine([REPLY, "A second answer.", "x " * 400], delay=0.005)
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.chat_screen
        await wait_for(pilot, lambda: app.engine_state == "ready", "the engine")
        screen.prompt.focus()
        await pilot.press(*"Hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.last_done is not None and not screen.generating, "the reply")
        assert screen.chat_log.views()[-1].text == REPLY
        assert engine.calls[-1][-1] == {"role": "user", "content": "Hi"}
        assert engine.calls[-1][0]["role"] == "system"  # the configured system prompt goes first

        first = screen.last_done
        await pilot.press("ctrl+r")  # retry: the reply is replaced by the next scripted one
        await wait_for(pilot, lambda: screen.last_done is not first and not screen.generating, "the retry")
        assert [v.text for v in screen.chat_log.views()] == ["Hi", "A second answer."]

        second = screen.last_done
        await pilot.press(*"Go on")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.generating and screen._reply_view is not None
                       and screen._reply_view.text, "the long reply to start")
        await pilot.press("escape")  # stop: the partial reply is kept and marked stopped
        await wait_for(pilot, lambda: screen.last_done is not second and not screen.generating, "the stop")
        assert screen.last_done.reason == "cancelled"
        assert 0 < screen.last_done.metrics.generated_tokens < 400
        assert "stopped" in screen.chat_log.views()[-1].footer
    assert len(engine.threads - {threading.get_ident()}) == 1  # every reply on the model's one thread
    assert engine.closed


@pytest.fixture
def scripted_url():
    engine = ScriptedEngine([REPLY], delay=0.01)
    cfg = Config().with_values({"server.queue_size": 1})
    with running(create_app(cfg, engine)) as url:
        yield url, engine


def test_server_streams_the_scripted_reply(scripted_url) -> None:
    url, engine = scripted_url
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    whole = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "Hi"}])
    assert whole.choices[0].message.content == REPLY and whole.choices[0].finish_reason == "stop"
    chunks = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "Hi"}],
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY


def test_server_answers_429_when_the_queue_is_full(scripted_url) -> None:
    url, engine = scripted_url
    engine._delay = 0.2  # 8 words: each reply holds the engine ~1.6 s
    results: list[int] = []

    def ask() -> None:
        reply = httpx.post(f"{url}/chat/completions", timeout=30,
                           json={"messages": [{"role": "user", "content": "Hi"}]})
        results.append(reply.status_code)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 200, 429, 429]  # one running, one queued (queue_size 1), two refused


def test_a_client_that_leaves_mid_stream_frees_the_engine_within_a_token(scripted_url) -> None:
    url, engine = scripted_url
    engine._replies = iter([" ".join(["word"] * 300), REPLY])
    with httpx.stream("POST", f"{url}/chat/completions", timeout=30,
                      json={"messages": [{"role": "user", "content": "Hi"}], "stream": True}) as reply:
        lines = reply.iter_lines()
        assert sum(1 for line, _ in zip(lines, range(5)) if line.startswith("data:")) >= 2
    # the connection is closed: the reply stops at the next token, and the next request is served
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    whole = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "Hi"}])
    assert whole.choices[0].message.content == REPLY
    assert engine.reasons[0] == "cancelled" and engine.reasons[1] == "stop"
    assert len(engine.threads - {threading.get_ident()}) == 1  # every reply on the model's one thread


def test_the_server_queues_by_service_tier() -> None:
    """OpenAI's `service_tier`: 'priority' waits before 'default', 'flex' after it (nobody is cut off)."""
    engine = ScriptedEngine(["first " * 300, "next"], delay=0.01)  # ~3 s: the others queue meanwhile
    statuses: list[int] = []

    def ask(tier: str) -> None:
        reply = httpx.post(f"{url}/chat/completions", timeout=30, json={
            "messages": [{"role": "user", "content": tier}], "service_tier": tier})
        statuses.append(reply.status_code)

    with running(create_app(Config().with_values({"server.queue_size": 4}), engine)) as url:
        first = threading.Thread(target=ask, args=("auto",))
        first.start()
        while not engine.calls:  # the first reply runs; the others queue behind it, in any order
            time.sleep(0.01)
        waiting = [threading.Thread(target=ask, args=(tier,)) for tier in ("flex", "default", "priority")]
        for thread in waiting:
            thread.start()
        for thread in (first, *waiting):
            thread.join()
    assert statuses == [200] * 4
    assert [call[-1]["content"] for call in engine.calls] == ["auto", "priority", "default", "flex"]
    assert engine.reasons == ["stop"] * 4

"""The runtime spine on the scripted engine: the scheduler's thread, order, bounded queue,
cancellation and preemption, and the async event stream over it. Milliseconds, no model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fake_engine import ScriptedEngine

from edge_ai.errors import BusyError, EdgeAIError, ModelLoadError, StoppedError
from runtime.llm.events import DoneEvent, Event, SamplingParams, TokenEvent
from runtime.llm.interface import ChatEngine
from runtime.llm.scheduler import Job, Priority, Scheduler
from runtime.llm.stream import stream

LONG = " ".join(f"w{i}" for i in range(200))


class Recorder:
    """Collects one job's events and its end, on the scheduler's thread."""

    def __init__(self, label: str, log: list[str]) -> None:
        self.label, self.log = label, log
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.ended = threading.Event()

    def on_event(self, event: Event) -> None:
        if not self.events:
            self.log.append(self.label)  # the order jobs started in
        self.events.append(event)

    def on_end(self, error: BaseException | None) -> None:
        self.error = error
        self.ended.set()

    @property
    def done(self) -> DoneEvent:
        assert isinstance(self.events[-1], DoneEvent)
        return self.events[-1]


def chat(engine: ChatEngine, stop: threading.Event) -> Iterator[Event]:
    return engine.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=1000), stop=stop)


def submit(scheduler: Scheduler, label: str, log: list[str], **kwargs) -> tuple[Recorder, Job]:
    recorder = Recorder(label, log)
    job = scheduler.submit(chat, recorder.on_event, recorder.on_end, **kwargs)
    return recorder, job


def wait(condition: Callable[[], object], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds the scheduler's thread in a first job until set, so later jobs queue up."""
    event = threading.Event()
    yield event
    event.set()


def block_until(gate: threading.Event) -> Callable[[ChatEngine, threading.Event], Iterator[Event]]:
    def call(engine: ChatEngine, stop: threading.Event) -> Iterator[Event]:
        gate.wait(10)
        yield from engine.chat([{"role": "user", "content": "first"}], stop=stop)
    return call


def test_the_model_is_loaded_used_and_freed_on_one_thread() -> None:
    """llama.cpp's OpenMP team is tied to the calling thread: a thread hop per reply cost 40% decode."""
    scheduler = Scheduler(queue_size=4)
    engine = scheduler.load(lambda: ScriptedEngine(["a b c"])).result(5)
    log: list[str] = []
    recorders = [submit(scheduler, str(i), log)[0] for i in range(3)]
    for recorder in recorders:
        assert recorder.ended.wait(5) and recorder.error is None and recorder.done.text == "a b c"
    scheduler.close()
    assert engine.closed and len(engine.threads) == 1 and threading.get_ident() not in engine.threads


def test_waiting_requests_run_by_priority_then_arrival(gate: threading.Event) -> None:
    scheduler = Scheduler(ScriptedEngine(["x"]), queue_size=8)
    log: list[str] = []
    first = Recorder("first", log)
    scheduler.submit(block_until(gate), first.on_event, first.on_end)
    wait(lambda: not scheduler._heap, "the first job to start")
    background, _ = submit(scheduler, "background", log, priority=Priority.BACKGROUND)
    normal_a, _ = submit(scheduler, "normal-a", log)
    urgent, urgent_job = submit(scheduler, "urgent", log, priority=Priority.URGENT)
    normal_b, _ = submit(scheduler, "normal-b", log)
    gate.set()
    assert background.ended.wait(5)
    assert log == ["first", "urgent", "normal-a", "normal-b", "background"]
    scheduler.close()


def test_a_full_queue_refuses_at_once_and_a_cancelled_wait_frees_its_place(gate: threading.Event) -> None:
    scheduler = Scheduler(ScriptedEngine(["x"], name="tiny"), queue_size=2)
    log: list[str] = []
    first = Recorder("first", log)
    scheduler.submit(block_until(gate), first.on_event, first.on_end)
    wait(lambda: not scheduler._heap, "the first job to start")
    waiting, job = submit(scheduler, "waiting", log)
    submit(scheduler, "also-waiting", log)
    with pytest.raises(BusyError, match="tiny is answering another request and 2 more are waiting"):
        submit(scheduler, "refused", log)
    job.cancel()  # a client that gave up while waiting: its end is told at once, its place is free
    assert waiting.ended.is_set() and isinstance(waiting.error, StoppedError) and not waiting.events
    late, _ = submit(scheduler, "late", log)
    gate.set()
    assert late.ended.wait(5)
    assert log == ["first", "also-waiting", "late"]
    scheduler.close()


def test_cancelling_the_running_request_stops_it_within_a_token() -> None:
    engine = ScriptedEngine([LONG], delay=0.005)
    scheduler = Scheduler(engine)
    log: list[str] = []
    running, job = submit(scheduler, "running", log)
    wait(lambda: len(running.events) >= 3, "the reply to start")
    job.cancel()
    assert running.ended.wait(5) and running.error is None
    assert running.done.reason == "cancelled" and running.done.metrics.generated_tokens < 200
    scheduler.close()


def test_preemption_cancels_a_lower_or_equal_priority_reply_but_not_a_higher_one() -> None:
    engine = ScriptedEngine([LONG, "barge in", LONG, "polite"], delay=0.005)
    scheduler = Scheduler(engine)
    log: list[str] = []
    reply, _ = submit(scheduler, "reply", log)
    wait(lambda: reply.events, "the reply to start")
    barge, _ = submit(scheduler, "barge", log, priority=Priority.URGENT, preempt=True)
    assert barge.ended.wait(5)
    assert reply.done.reason == "cancelled" and barge.done.text == "barge in"

    urgent, urgent_job = submit(scheduler, "urgent", log, priority=Priority.URGENT)
    wait(lambda: urgent.events, "the urgent reply to start")
    polite, _ = submit(scheduler, "polite", log, preempt=True)  # NORMAL may not preempt URGENT
    time.sleep(0.05)
    urgent_job_still_runs = not urgent.ended.is_set()
    urgent_job.cancel()
    assert polite.ended.wait(5) and urgent_job_still_runs
    assert polite.done.text == "polite"
    scheduler.close()


def test_a_failed_load_keeps_the_engine_and_a_new_one_replaces_it() -> None:
    old, new = ScriptedEngine(["old"], name="old"), ScriptedEngine(["new"], name="new")
    scheduler = Scheduler(old)

    def broken() -> ChatEngine:
        raise ModelLoadError("not a GGUF file")

    with pytest.raises(ModelLoadError, match="not a GGUF"):
        scheduler.load(broken).result(5)
    assert scheduler.engine is old and not old.closed
    assert scheduler.load(lambda: new).result(5) is new
    assert scheduler.engine is new and old.closed
    assert scheduler.load(lambda: None).result(5) is None and scheduler.engine is new  # a superseded pick
    scheduler.close()
    assert new.closed


def test_without_an_engine_requests_get_the_load_error() -> None:
    scheduler = Scheduler()

    def broken() -> ChatEngine:
        raise ModelLoadError("the model file no longer exists")

    with pytest.raises(ModelLoadError):
        scheduler.load(broken).result(5)
    log: list[str] = []
    recorder, _ = submit(scheduler, "r", log)
    assert recorder.ended.wait(5) and isinstance(recorder.error, ModelLoadError)
    scheduler.close()


def test_closing_ends_waiting_requests_with_the_reason_and_stops_the_running_one(gate: threading.Event) -> None:
    engine = ScriptedEngine(["x"])
    scheduler = Scheduler(engine)
    log: list[str] = []
    first = Recorder("first", log)
    scheduler.submit(block_until(gate), first.on_event, first.on_end)
    wait(lambda: not scheduler._heap, "the first job to start")
    waiting, _ = submit(scheduler, "waiting", log)
    closer = threading.Thread(target=scheduler.close, args=(EdgeAIError("shutting down"),))
    closer.start()
    assert waiting.ended.wait(5) and str(waiting.error) == "shutting down"
    gate.set()
    closer.join(5)
    assert first.ended.is_set() and first.done.reason == "cancelled" and engine.closed
    with pytest.raises(EdgeAIError, match="shutting down"):
        submit(scheduler, "after", log)


# ----------------------------------------------------------------------------- the async stream


async def test_the_stream_yields_every_event_in_order_even_those_before_the_reader() -> None:
    engine = ScriptedEngine(["one two three four"])
    scheduler = Scheduler(engine)
    events = stream(scheduler, chat)
    await asyncio.sleep(0.05)  # the reply is over before anyone reads (a view still mounting)
    got = [event async for event in events]
    assert [e.text for e in got if isinstance(e, TokenEvent)] == ["one", " two", " three", " four"]
    assert isinstance(got[-1], DoneEvent) and got[-1].text == "one two three four"
    assert all(a.at <= b.at for a, b in zip(got, got[1:]))
    scheduler.close()


async def test_cancelling_the_stream_reaches_the_engine_within_a_token() -> None:
    engine = ScriptedEngine([LONG], delay=0.005)
    scheduler = Scheduler(engine)
    events = stream(scheduler, chat)
    tokens = 0
    async for event in events:
        if isinstance(event, TokenEvent):
            tokens += 1
            if tokens == 3:
                events.cancel()
        else:
            assert event.reason == "cancelled" and event.metrics.generated_tokens <= 5
    scheduler.close()


async def test_the_stream_raises_the_jobs_error_and_busy_at_once(gate: threading.Event) -> None:
    scheduler = Scheduler(ScriptedEngine(["x"]), queue_size=1)

    def failing(engine: ChatEngine, stop: threading.Event) -> Iterator[Event]:
        yield TokenEvent("partial")
        raise ModelLoadError("llama.cpp failed to decode")

    events = stream(scheduler, failing)
    assert isinstance(await events.next(), TokenEvent)
    with pytest.raises(ModelLoadError, match="failed to decode"):
        await events.next()

    blocking = stream(scheduler, block_until(gate))
    await asyncio.sleep(0.02)
    waiting = stream(scheduler, chat)
    with pytest.raises(BusyError):
        stream(scheduler, chat)
    waiting.cancel()
    with pytest.raises(StoppedError):
        await waiting.next()
    gate.set()
    done, _ = await blocking.collect()
    assert done.reason == "stop"
    scheduler.close()


def test_only_the_stream_moves_events_across_threads() -> None:
    """One way from the model's thread to an event loop: a second copy of the plumbing (a to_thread
    pump per reply) would also call llama.cpp from a thread that did not load it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    allowed = root / "runtime" / "llm" / "stream.py"
    markers = ("call_soon_threadsafe", "run_coroutine_threadsafe", "to_thread(", "run_in_executor")
    offenders = [f"{path.relative_to(root)}: {marker}"
                 for package in ("edge_ai", "runtime", "tui")
                 for path in sorted((root / package).rglob("*.py")) if path != allowed
                 for marker in markers if marker in path.read_text()]
    assert offenders == []

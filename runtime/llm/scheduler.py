"""One thread owns each loaded model: it loads it, runs every request on it in priority order, frees it.

Why one thread: llama.cpp's CPU backend runs each graph on an OpenMP thread team tied to the
calling thread. Calling the model from a fresh thread per reply (a worker per reply) leaves the
previous team's threads competing with the new one: gemma3-270m on 2 cores decoded at 40 tok/s
from one thread and at 25 tok/s from a new thread each reply. So nothing else touches the model;
the TUI, the server and the voice pipeline submit jobs here and read their events through
`runtime.llm.stream`.

Requests wait in a bounded queue (a full one refuses at once with `BusyError`), the highest
priority first, then in arrival order. A request may *preempt*: it cancels the running one
within a token (a voice barge-in, a retry) instead of waiting behind it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from enum import IntEnum
from typing import Literal

from edge_ai.errors import BusyError, EdgeAIError, InternalError, NotFoundError, StoppedError
from runtime.llm.events import Event
from runtime.llm.interface import ChatEngine

log = logging.getLogger(__name__)


class Priority(IntEnum):
    BACKGROUND = 0  # work nobody waits for (summaries, indexing)
    NORMAL = 1  # a chat reply, an API request
    URGENT = 2  # a voice barge-in, loading the model the user just picked


Call = Callable[[ChatEngine, threading.Event], Iterator[Event]]
"""A request: given the engine and the job's stop token, the events of one reply."""
EventSink = Callable[[Event], None]
EndSink = Callable[[BaseException | None], None]
"""Told once, last: None after a call that ran to its end, else why it did not."""


class Job:
    """One request in the scheduler: its stop token, its place in line, its state."""

    def __init__(self, scheduler: Scheduler, work: Callable[[Job], None], priority: Priority,
                 on_end: EndSink, *, counted: bool) -> None:
        self.stop = threading.Event()
        self.priority = priority
        self.state: Literal["queued", "running", "done"] = "queued"
        self._scheduler, self._work, self._on_end = scheduler, work, on_end
        self._counted = counted  # takes a place in the bounded queue (requests do, loads do not)

    def cancel(self) -> None:
        """Stop this job: a queued one leaves the queue at once, a running one ends within a token."""
        self._scheduler._cancel(self)


class Scheduler:
    """Owns at most one engine on its own thread; `queue_size` requests may wait behind the running one."""

    def __init__(self, engine: ChatEngine | None = None, *, queue_size: int = 4, name: str = "model") -> None:
        self._engine = engine
        self._error: EdgeAIError | None = None  # why there is no engine (the last failed load)
        self._queue_size = queue_size
        self._heap: list[tuple[int, int, Job]] = []
        self._order = itertools.count()
        self._waiting = 0  # queued requests not cancelled
        self._running: Job | None = None
        self._closing = False
        self._closing_error: Exception = StoppedError("the model is closing")
        self._free_engine = True
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=f"edge-ai-{name}", daemon=True)
        self._thread.start()

    @property
    def engine(self) -> ChatEngine | None:
        """The loaded engine (read its name and context from anywhere; call it only through jobs)."""
        return self._engine

    @property
    def error(self) -> EdgeAIError | None:
        """Why no engine is loaded, when the last load failed."""
        return self._error

    # -- requests --------------------------------------------------------------------------------

    def submit(self, call: Call, on_event: EventSink, on_end: EndSink, *,
               priority: Priority = Priority.NORMAL, preempt: bool = False) -> Job:
        """Queue `call`; its events go to `on_event` and its end to `on_end`, on the model's thread.

        Raises `BusyError` at once when the queue is full and `StoppedError` once closing.
        `preempt` cancels the running request if it has no higher priority.
        """

        def work(job: Job) -> None:
            engine = self._engine
            if engine is None:
                raise self._error or NotFoundError("no model is loaded; pick one first")
            for event in call(engine, job.stop):
                on_event(event)

        with self._cond:
            self._refuse_when_closing()
            idle_place = 1 if self._running is None else 0  # about to start, not waiting behind anyone
            if self._waiting >= self._queue_size + idle_place:
                name = self._engine.name if self._engine is not None else "the model"
                raise BusyError(f"{name} is answering another request and {self._waiting} more are waiting")
            job = self._enqueue(work, priority, on_end, counted=True, preempt=preempt)
        return job

    def load(self, open_engine: Callable[[], ChatEngine | None]) -> Future[ChatEngine | None]:
        """Open a model on this thread and make it current, ahead of waiting requests.

        The running request is cancelled first (its reply ends, as a stop would end it); the old
        engine serves waiting requests no more and is closed once the new one is in. If opening
        fails, the old engine stays and the future holds the error. `open_engine` may return None
        to skip a load nobody wants any more (a newer pick superseded it).
        """
        future: Future[ChatEngine | None] = Future()

        def work(_: Job) -> None:
            try:
                new = open_engine()
            except EdgeAIError as exc:
                if self._engine is None:
                    self._error = exc
                raise
            except Exception as exc:  # a library failure is still one line for the user
                error = InternalError(f"could not load the model: {exc}")
                if self._engine is None:
                    self._error = error
                raise error from exc
            if new is not None:
                old, self._engine, self._error = self._engine, new, None
                if old is not None:
                    old.close()
            future.set_result(new)

        def ended(error: BaseException | None) -> None:
            if error is not None and not future.done():
                future.set_exception(error)

        with self._cond:
            self._refuse_when_closing()
            self._enqueue(work, Priority.URGENT, ended, counted=False, preempt=True)
        return future

    def close(self, error: Exception | None = None, timeout: float = 10.0, *, free_engine: bool = True) -> None:
        """Refuse new work, end waiting requests with `error`, stop the running one, free the engine
        (unless `free_engine` is False: its owner frees it, as a test's shared engine).

        Waits up to `timeout` for the running request to end (so its reply is saved) and the model
        to be freed on its own thread.
        """
        dropped: list[Job] = []
        with self._cond:
            if not self._closing:
                self._closing = True
                self._free_engine = free_engine
                self._closing_error = error or self._closing_error
                dropped = [job for _, _, job in self._heap if self._drop(job)]
                self._heap.clear()
                if self._running is not None:
                    self._running.stop.set()
                self._cond.notify_all()
        for job in dropped:
            self._tell_end(job, self._closing_error)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- the model's thread ----------------------------------------------------------------------

    def _refuse_when_closing(self) -> None:
        if self._closing:
            raise self._closing_error

    def _enqueue(self, work: Callable[[Job], None], priority: Priority, on_end: EndSink, *,
                 counted: bool, preempt: bool) -> Job:
        job = Job(self, work, priority, on_end, counted=counted)
        if counted:
            self._waiting += 1
        heapq.heappush(self._heap, (-priority, next(self._order), job))
        if preempt and self._running is not None and self._running.priority <= priority:
            self._running.stop.set()
        self._cond.notify()
        return job

    def _cancel(self, job: Job) -> None:
        with self._cond:
            job.stop.set()
            dropped = self._drop(job)  # its heap entry is skipped when it comes up
        if dropped:
            self._tell_end(job, StoppedError("the request was stopped before it started"))

    def _drop(self, job: Job) -> bool:
        """Take a queued job out of line (lock held); True if it was queued. The caller tells its
        end once the lock is released, so a listener may call back into the scheduler."""
        if job.state != "queued":
            return False
        job.state = "done"
        if job._counted:
            self._waiting -= 1
        return True

    def _next_job(self) -> Job | None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].state != "queued":
                    heapq.heappop(self._heap)
                if self._heap:
                    job = heapq.heappop(self._heap)[2]
                    job.state = "running"
                    if job._counted:
                        self._waiting -= 1
                    self._running = job
                    return job
                if self._closing:
                    return None
                self._cond.wait()

    def _loop(self) -> None:
        while (job := self._next_job()) is not None:
            error: BaseException | None = None
            try:
                job._work(job)
            except BaseException as exc:  # handed to whoever waits for the job
                error = exc
            with self._cond:
                job.state, self._running = "done", None
            self._tell_end(job, error)
        engine, self._engine = self._engine, None
        if engine is not None and self._free_engine:
            engine.close()

    @staticmethod
    def _tell_end(job: Job, error: BaseException | None) -> None:
        try:
            job._on_end(error)
        except Exception:  # a listener's bug must not stop the model's thread
            log.exception("a job's end listener failed")

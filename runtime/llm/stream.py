"""A scheduled engine call as an async iterator of events: the one way events cross from the
model's thread to an event loop (the TUI's, the server's, the voice pipeline's).

    events = stream(scheduler, lambda engine, stop: engine.chat(messages, sampling, stop=stop))
    async for event in events: ...   # TokenEvents, then the DoneEvent
    events.cancel()                  # from the loop, at any time: reaches llama.cpp within a token

The engine starts as soon as `stream` returns, so tokens produced before the reader is ready
(while the UI mounts the reply's view) wait here rather than being lost. The model's thread
wakes the loop at most once per batch of events: a reader that falls behind (a UI drawing a
frame) is handed everything that arrived meanwhile in one go.
"""

from __future__ import annotations

import asyncio
import collections
import threading

from edge_ai.errors import StoppedError
from runtime.llm.events import DoneEvent, Event, TokenLogprob
from runtime.llm.scheduler import Call, Job, Priority, Scheduler

_END = object()


class EventStream:
    """The events of one job, read on the loop that created the stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: collections.deque[object] = collections.deque()
        self._wake_pending = False
        self._ready = asyncio.Event()
        self._error: BaseException | None = None
        self._ended = False
        self.job: Job | None = None

    # -- the model's thread ----------------------------------------------------------------------

    def _put(self, item: object) -> None:
        with self._lock:
            self._items.append(item)
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody reads any more
            pass

    def _end(self, error: BaseException | None) -> None:
        self._error = error
        self._put(_END)

    # -- the loop --------------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()

    def cancel(self) -> None:
        """Stop the job: dropped from the queue if it waits, ended within a token if it runs."""
        if self.job is not None:
            self.job.cancel()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._ended:
                raise StopAsyncIteration
            with self._lock:
                item = self._items.popleft() if self._items else None
                if item is None:
                    self._ready.clear()
            if item is None:
                await self._ready.wait()
                continue
            if item is _END:
                self._ended = True
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            assert isinstance(item, Event)
            return item

    async def next(self) -> Event:
        """The next event; `StoppedError` if the job ended without one more (stopped, or closing)."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise StoppedError("the reply was stopped before it finished") from None

    async def collect(self) -> tuple[DoneEvent, list[TokenLogprob]]:
        """The whole reply: how it ended, and its tokens' log-probabilities when they were asked for."""
        logprobs: list[TokenLogprob] = []
        while not isinstance(event := await self.next(), DoneEvent):
            logprobs.extend(event.logprobs)
        return event, logprobs


def stream(scheduler: Scheduler, call: Call, *, priority: Priority = Priority.NORMAL,
           preempt: bool = False) -> EventStream:
    """Submit `call` to `scheduler` and return its events; call on the loop that will read them.

    Raises at once what `Scheduler.submit` raises (`BusyError` on a full queue).
    """
    events = EventStream(asyncio.get_running_loop())
    events.job = scheduler.submit(call, events._put, events._end, priority=priority, preempt=preempt)
    return events

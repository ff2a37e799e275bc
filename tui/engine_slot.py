"""The app's current engine, loaded and swapped from worker threads.

Loading a model takes ~0.5 s and a reply runs for seconds, so both happen in Textual thread
workers. The slot makes that safe: a reply holds the engine for its whole duration (`use()`),
and a swap or shutdown first cancels the reply in progress, then waits for it to let go before
closing the old engine, so llama.cpp is never freed under a running generation.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from edge_ai.config import Config
from edge_ai.errors import EdgeAIError, InternalError
from runtime.llm.interface import ChatEngine

EngineFactory = Callable[[Config], ChatEngine]
"""Builds an engine (`runtime.llm.engine.Engine`, or a test's scripted one) from config."""


def default_engine_factory(cfg: Config, progress: Callable[[int, int], None] | None = None) -> ChatEngine:
    """The configured engine (runtime.llm.loading), a packaged model's assembly reported through
    `progress` (the app shows it in the status bar)."""
    from runtime.llm.loading import open_engine

    return open_engine(cfg, progress=progress)


class EngineSlot:
    """Holds at most one engine; thread-safe."""

    def __init__(self, factory: EngineFactory) -> None:
        self._factory = factory
        self._engine: ChatEngine | None = None
        self._error: EdgeAIError | None = None
        self._settled = threading.Event()  # the first load finished (engine or error)
        self._in_use = threading.Lock()  # held by a reply for its whole duration
        self._loading = threading.Lock()  # one load at a time
        self._closed = False

    @property
    def engine(self) -> ChatEngine | None:
        """The current engine, or None while the first load runs (or after it failed)."""
        return self._engine

    @property
    def error(self) -> EdgeAIError | None:
        """Why the last load failed while no engine is available."""
        return self._error

    def load(self, cfg: Config, wanted: Callable[[], bool] = lambda: True) -> ChatEngine | None:
        """Build an engine from `cfg` and make it current, closing the previous one. Blocking.

        Loads run one at a time; `wanted()` is asked once this one's turn comes, so a request
        superseded while it waited returns None without loading anything. If loading fails the
        previous engine stays current and the error is raised; when there is no previous engine
        the error is also remembered for replies waiting in `use()`.
        """
        with self._loading:
            if not wanted():
                return None
            return self._load(cfg)

    def _load(self, cfg: Config) -> ChatEngine:
        try:
            new = self._factory(cfg)
        except EdgeAIError as exc:
            if self._engine is None:
                self._error = exc
            self._settled.set()
            raise
        except Exception as exc:  # a bug or an unexpected library failure: still one line for the user
            error = InternalError(f"could not load model '{cfg.model.name}': {exc}")
            if self._engine is None:
                self._error = error
            self._settled.set()
            raise error from exc
        self._swap(new)
        return new

    def _swap(self, new: ChatEngine) -> None:
        old = self._engine
        if old is not None:
            old.cancel()
        with self._in_use:
            if self._closed:
                new.close()
                raise EdgeAIError("the app is closing")
            self._engine, self._error = new, None
        self._settled.set()
        if old is not None:
            old.close()

    @contextlib.contextmanager
    def use(self, timeout: float | None = None) -> Iterator[ChatEngine]:
        """Hold the current engine for one reply, waiting for the first load if it still runs."""
        if not self._settled.wait(timeout):
            raise EdgeAIError("the model is still loading; try again in a moment")
        with self._in_use:
            if self._closed:
                raise EdgeAIError("the app is closing")
            if self._engine is None:
                raise self._error or EdgeAIError("no model is loaded; pick one with Ctrl+O")
            yield self._engine

    def cancel(self) -> None:
        """Stop the reply in progress (if any) within one token."""
        engine = self._engine
        if engine is not None:
            engine.cancel()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel any reply, wait for it to finish (and be saved), then free the engine."""
        self.cancel()
        self._settled.set()  # release replies still waiting for a load
        acquired = self._in_use.acquire(timeout=timeout)
        try:
            self._closed = True
            engine, self._engine = self._engine, None
        finally:
            if acquired:
                self._in_use.release()
        if engine is not None and acquired:
            engine.close()

"""A scripted engine for logic tests: the `runtime.llm.interface.ChatEngine` protocol, no model.

It replies with the next scripted text, one word per TokenEvent, `delay` seconds apart, and honours
cancel / stop tokens between words as the real engine does between tokens. TUI and server logic
(streaming, stop, retry, queueing, disconnects) is tested with it in milliseconds; the real-model
tests stay, for everything the model itself does.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence

from runtime.llm.events import DoneEvent, Event, Metrics, SamplingParams, TokenEvent


class ScriptedEngine:
    def __init__(self, replies: Sequence[str] = ("Hello from the script.",), *, delay: float = 0.0,
                 name: str = "scripted", n_ctx: int = 4096) -> None:
        self.name, self.n_ctx = name, n_ctx
        self.sees_images = False
        self._replies = itertools.cycle(replies)
        self._delay = delay
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self.context_used = 0
        self.calls: list[list[dict[str, str]]] = []  # the messages of every chat, for assertions
        self.threads: set[int] = {threading.get_ident()}  # every thread that built or called it
        self.reasons: list[str] = []  # how each reply ended
        self.closed = False

    def chat(self, messages: Sequence[dict[str, str]], sampling: SamplingParams = SamplingParams(), *,
             stop: threading.Event | None = None) -> Iterator[Event]:
        self.calls.append([dict(m) for m in messages])
        prompt_tokens = sum(len(m["content"].split()) + 4 for m in messages)
        return self._reply(next(self._replies), sampling, stop, prompt_tokens)

    def complete(self, prompt: str, sampling: SamplingParams = SamplingParams(), *,
                 stop: threading.Event | None = None) -> Iterator[Event]:
        return self._reply(next(self._replies), sampling, stop, len(prompt.split()))

    def _reply(self, text: str, sampling: SamplingParams, stop: threading.Event | None,
               prompt_tokens: int) -> Iterator[Event]:
        with self._lock:
            self.threads.add(threading.get_ident())
            self._cancel.clear()
            start = time.perf_counter()
            words = text.split(" ")
            shown: list[str] = []
            reason = "stop"
            for i, word in enumerate(words):
                if self._cancel.is_set() or (stop is not None and stop.is_set()):
                    reason = "cancelled"
                    break
                if len(shown) >= sampling.max_tokens:
                    reason = "length"
                    break
                piece = word if i == 0 else " " + word
                shown.append(piece)
                yield TokenEvent(piece)
                time.sleep(self._delay)
            self.context_used = prompt_tokens + len(shown)
            self.reasons.append(reason)
            elapsed = time.perf_counter() - start
            metrics = Metrics(prompt_tokens=prompt_tokens, cached_tokens=0, prefill_tokens=prompt_tokens,
                              generated_tokens=len(shown), ttft_s=self._delay, prefill_tok_s=0.0,
                              decode_tok_s=len(shown) / elapsed if elapsed > 0 else 0.0, itl_p50_ms=0.0,
                              itl_p95_ms=0.0, total_s=elapsed, context_used=self.context_used,
                              context_size=self.n_ctx)
            yield DoneEvent(reason, "".join(shown), metrics)

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self.threads.add(threading.get_ident())
        self.closed = True

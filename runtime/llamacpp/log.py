"""Route llama.cpp's own log output into edge-ai's log file, and keep its last error lines.

With `verbose=False` llama.cpp still writes to stderr, which would scribble over the TUI and mix
into `edge-ai ask` output. One process-wide callback sends it to the `llama.cpp` logger instead.
Many failures (a missing tensor, a wrong shape, no memory for the KV cache) reach Python only as
"Failed to load model" while the reason is logged, so the callback also remembers the last error
lines: `errors_since(mark())` gives the user the reason instead of "see the log".

A call whose log *is* its result (llama_model_quantize reports progress and planned types only
there) diverts the callback to its own line handler for its duration (`diverted`).
llama-cpp-python's Python-side prints (it needs verbose=True, see `load`) go to the debug log
through `python_prints_to_log`.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator

import llama_cpp

logger = logging.getLogger("llama.cpp")
# enum ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_LEVEL_CONT = 5  # a message that continues the previous one (keeps its level)
_KEPT_ERRORS = 20
_last_level = logging.INFO
_errors: deque[tuple[int, str]] = deque(maxlen=_KEPT_ERRORS)  # (sequence number, line)
_sequence = itertools.count()
_DIVERT_LOCK = threading.Lock()  # llama.cpp's log callback is process-wide


@llama_cpp.llama_log_callback
def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    global _last_level
    if level != _LEVEL_CONT:
        _last_level = _LEVELS.get(level, logging.INFO)
    message = text.decode("utf-8", errors="replace").rstrip("\n")
    if _last_level >= logging.ERROR:
        _errors.extend((next(_sequence), line.strip()) for line in message.splitlines() if line.strip())
    if logger.isEnabledFor(_last_level):
        logger.log(_last_level, message)


def install() -> None:
    """Take over llama.cpp's log callback, and its multimodal library's (idempotent)."""
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    from llama_cpp import mtmd_cpp

    for set_log in (mtmd_cpp.mtmd_log_set, mtmd_cpp.mtmd_helper_log_set):
        set_log(ctypes.cast(_callback, set_log.argtypes[0]), ctypes.c_void_p(0))


def mark() -> int:
    """A position in the error history; pass it to `errors_since` after the call that may fail."""
    return _errors[-1][0] + 1 if _errors else 0


def errors_since(position: int, limit: int = 3) -> list[str]:
    """The last `limit` telling error lines llama.cpp logged after `position` (a `mark()`)."""
    return telling([line for seq, line in _errors if seq >= position])[-limit:]


_GENERIC_ERRORS = ("failed to load model",)  # llama.cpp's closing line, after the one that says why


def telling(lines: list[str]) -> list[str]:
    """`lines` without llama.cpp's generic closing errors, unless nothing else is left."""
    specific = [line for line in lines if not line.endswith(_GENERIC_ERRORS)]
    return specific or lines


class Diversion:
    """llama.cpp's log fed to `handler(level, text)` (a `logging` level; continuation pieces keep
    their line's level). An exception in the handler must never unwind into C: the first one is
    kept in `error` and the handler is not called again."""

    def __init__(self, handler: Callable[[int, str], None]) -> None:
        self.handler = handler
        self.error: BaseException | None = None
        self._level = logging.INFO
        self.callback = llama_cpp.llama_log_callback(self._on_log)  # kept alive as long as this object

    def _on_log(self, level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        if self.error is not None:
            return
        try:
            if level != _LEVEL_CONT:
                self._level = _LEVELS.get(level, logging.INFO)
            self.handler(self._level, text.decode("utf-8", errors="replace"))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller through `error`
            self.error = exc


@contextlib.contextmanager
def diverted(handler: Callable[[int, str], None]) -> Iterator[Diversion]:
    """llama.cpp's log goes to `handler` inside the block (one diversion at a time), and back to
    whatever received it before (our callback, or stderr) afterwards."""
    diversion = Diversion(handler)
    with _DIVERT_LOCK:
        previous = llama_cpp.llama_log_callback()
        previous_data = ctypes.c_void_p()
        llama_cpp.llama_log_get(ctypes.byref(previous), ctypes.byref(previous_data))
        llama_cpp.llama_log_set(diversion.callback, ctypes.c_void_p(0))
        try:
            yield diversion
        finally:
            llama_cpp.llama_log_set(previous if ctypes.cast(previous, ctypes.c_void_p).value else None,
                                    previous_data)


class _PythonPrints(io.TextIOBase):
    """A text stream that sends llama-cpp-python's Python-side prints to the debug log."""

    def write(self, text: str) -> int:
        if text.strip():
            logger.debug("llama-cpp-python: %s", text.rstrip())
        return len(text)


def python_prints_to_log() -> contextlib.AbstractContextManager:
    """Inside the block, llama-cpp-python's prints on sys.stderr go to the debug log."""
    return contextlib.redirect_stderr(_PythonPrints())

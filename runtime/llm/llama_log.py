"""Route llama.cpp's own log output into edge-ai's log file, and keep its last error lines.

With `verbose=False` llama.cpp still writes to stderr, which would scribble over the TUI and mix
into `edge-ai ask` output. One process-wide callback sends it to the `llama.cpp` logger instead.
Many failures (a missing tensor, a wrong shape, no memory for the KV cache) reach Python only as
"Failed to load model" while the reason is logged, so the callback also remembers the last error
lines: `errors_since(mark())` gives the user the reason instead of "see the log".
"""

from __future__ import annotations

import ctypes
import itertools
import logging
from collections import deque

import llama_cpp

logger = logging.getLogger("llama.cpp")
# enum ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
GGML_LOG_LEVELS = _LEVELS  # public: ggml log level -> logging level, for other llama.cpp log callbacks
GGML_LOG_LEVEL_CONT = 5  # a message that continues the previous one (keeps its level)
_KEPT_ERRORS = 20
_last_level = logging.INFO
_errors: deque[tuple[int, str]] = deque(maxlen=_KEPT_ERRORS)  # (sequence number, line)
_sequence = itertools.count()


@llama_cpp.llama_log_callback
def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    global _last_level
    if level != GGML_LOG_LEVEL_CONT:
        _last_level = _LEVELS.get(level, logging.INFO)
    message = text.decode("utf-8", errors="replace").rstrip("\n")
    if _last_level >= logging.ERROR:
        _errors.extend((next(_sequence), line.strip()) for line in message.splitlines() if line.strip())
    if logger.isEnabledFor(_last_level):
        logger.log(_last_level, message)


def install() -> None:
    """Take over llama.cpp's log callback (idempotent)."""
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


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

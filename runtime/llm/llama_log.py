"""Route llama.cpp's own log output into edge-ai's log file.

With `verbose=False` llama.cpp still writes to stderr, which would scribble over the TUI and mix
into `edge-ai ask` output. One process-wide callback sends it to the `llama.cpp` logger instead.
"""

from __future__ import annotations

import ctypes
import logging

import llama_cpp

logger = logging.getLogger("llama.cpp")
# enum ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
GGML_LOG_LEVELS = _LEVELS  # public: ggml log level -> logging level, for other llama.cpp log callbacks
GGML_LOG_LEVEL_CONT = 5  # a message that continues the previous one (keeps its level)
_last_level = logging.INFO


@llama_cpp.llama_log_callback
def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    global _last_level
    if level != 5:  # 5 = continuation of the previous message
        _last_level = _LEVELS.get(level, logging.INFO)
    if logger.isEnabledFor(_last_level):
        logger.log(_last_level, text.decode("utf-8", errors="replace").rstrip("\n"))


def install() -> None:
    """Take over llama.cpp's log callback (idempotent)."""
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))

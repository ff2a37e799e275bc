"""Every model load in edge-ai: a file that has never loaded before is loaded in a child process first.

`edge_ai.gguf_hparams` refuses every hyperparameter llama.cpp is known to assert on, but llama.cpp
has more `GGML_ASSERT`s (tensor loading, context creation) than any list can hold, and each one
aborts the whole process: the TUI or the server with it. So the first load of a file happens in a
throw-away `python -m runtime.llamacpp.load` process with the same parameters; an abort there
becomes one line, "llama.cpp crashed loading X (signal 6): <the assertion>", and the caller lives
on. A file that loaded is remembered by path, size and mtime (`edge_ai.registry.loads_fine`), so
the cost (one extra load, measured in benchmarks/bench_load_check.py) is paid once per file.

`load_llama` is that check followed by the real load, for the engine and `edge-ai eval`; code that
builds its own context from llama.h (imatrix) or only reads the file (quantize) calls
`ensure_loads` first. A load spread over RPC servers is checked the same way, servers included (the
child's connection ends before ours begins: a server takes one client at a time).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import Llama

from edge_ai import registry
from edge_ai.errors import ModelLoadError
from edge_ai.gguf_file import GGUFInfo, check_gguf
from runtime.llamacpp import log as llama_log
from runtime.llamacpp import overrides, rpc

_ERROR_PREFIX = "ERROR "  # how the child marks llama.cpp's error log lines on its stderr
_ABORT_LINE = re.compile(r"^(?P<file>\S+?):(?P<line>\d+): (?P<message>.+)$")  # ggml_abort: "file:line: text"
_WHAT_LINE = re.compile(r"^\s*what\(\):\s*(?P<message>.+)$")  # an uncaught C++ exception (std::terminate)
_CHILD_ENV = {"GGML_NO_BACKTRACE": "1"}  # else ggml_abort forks gdb to print a backtrace: slow, noisy


def ensure_loads(path: Path, params: dict[str, Any], rpc_servers: Sequence[str] = ()) -> None:
    """Raise a one-line `EdgeAIError` if loading `path` with llama_cpp.Llama(**params) (layers on
    `rpc_servers` as load_llama places them) crashes or fails; load it in a child process unless it is
    known to load fine."""
    if registry.loads_fine(path):
        return
    request = {"params": {**params, "model_path": str(path)}, "rpc_servers": list(rpc_servers)}
    result = subprocess.run(
        [sys.executable, "-m", "runtime.llamacpp.load", json.dumps(request)],
        stdin=subprocess.DEVNULL, capture_output=True, env={**os.environ, **_CHILD_ENV}, check=False,
    )
    if result.returncode == 0:
        registry.remember_loads_fine(path)
        return
    raise ModelLoadError(failure_message(path, result.returncode, result.stderr.decode("utf-8", errors="replace")))


def ggml_type(name: str) -> int:
    """ggml's number for a tensor type name ("f16", "q8_0"...), as llama.cpp's params take it."""
    return int(getattr(llama_cpp, f"GGML_TYPE_{name.upper()}"))


def load_llama(path: Path, params: dict[str, Any], *, tensor_overrides: Sequence[tuple[str, str]] = (),
               info: GGUFInfo | None = None, rpc_servers: Sequence[str] = ()) -> Llama:
    """`Llama(model_path=path, **params)`, after `ensure_loads`; a failure is one `ModelLoadError` line.
    `tensor_overrides` ((regex, device) pairs, checked against `info`) place tensors (runtime.planner);
    the offloaded layers (params' n_gpu_layers, split by tensor_split) go to the devices of `rpc_servers`.

    verbose=True because verbose=False redirects the process's stdout/stderr file descriptors
    while loading, which blanks a running TUI; llama.cpp's own log already goes to our callback,
    and llama-cpp-python's prints go to the debug log.
    """
    if tensor_overrides and info is None:
        info = check_gguf(path)
    for server in rpc_servers:  # each unreachable or busy server in one line, before a child aborts on it
        rpc.probe(server)
    ensure_loads(path, params, rpc_servers)  # a native abort in a child process, not in ours
    llama_log.install()
    mark = llama_log.mark()
    try:
        with (llama_log.python_prints_to_log(), overrides.applied(info, tensor_overrides),
              rpc.applied(rpc_servers)):
            llm = Llama(model_path=str(path), **params, verbose=True)
    except Exception as exc:  # llama-cpp-python raises bare ValueError/RuntimeError
        reason = "; ".join(llama_log.errors_since(mark)) or str(exc)
        raise ModelLoadError(
            f"llama.cpp could not load {path.name}: {reason}; check the file with `edge-ai models info`"
        ) from None
    llm.verbose = False
    return llm


def failure_message(path: Path, returncode: int, stderr: str) -> str:
    """One line for a child load that ended with `returncode` (negative: killed by that signal)."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    errors = llama_log.telling([line.removeprefix(_ERROR_PREFIX).strip()
                                for line in lines if line.startswith(_ERROR_PREFIX)])
    if returncode < 0:
        number = -returncode
        reason = _crash_reason(lines) or "; ".join(errors[-3:]) or _signal_text(number)
        return (f"llama.cpp crashed loading {path.name} (signal {number}): {reason}; "
                "the file is malformed or needs a newer llama.cpp, re-convert or re-download it")
    reason = "; ".join(errors[-3:]) or (lines[-1] if lines else f"exit code {returncode}")
    return f"llama.cpp could not load {path.name}: {reason}; check the file with `edge-ai models info`"


def _crash_reason(lines: list[str]) -> str | None:
    """The assertion or exception text a native abort printed, with the source path shortened."""
    for line in reversed(lines):
        if match := _ABORT_LINE.match(line):
            return f"{Path(match['file']).name}:{match['line']}: {match['message']}"
        if match := _WHAT_LINE.match(line):
            return match["message"]
    return None


def _signal_text(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "no message"


def _child(arguments: str) -> int:
    """Load the model once and exit: 0 when it loaded, 1 when llama-cpp-python refused it."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(message)s")
    llama_log.install()
    request = json.loads(arguments)
    try:
        # verbose=True: verbose=False redirects stderr while loading, hiding the assertion text.
        with rpc.applied(request["rpc_servers"]):
            llm = Llama(**request["params"], verbose=True)
    except (ValueError, RuntimeError):  # the reason is already on stderr, from llama.cpp's log
        return 1
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))

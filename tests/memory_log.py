"""What llama.cpp itself says it allocated for a model's context memory, read from its log.

llama.cpp logs one `llama_kv_cache: size = X MiB (...)` line per KV cache it creates (two for a
sliding-window model: the full and the windowed cache) and `llama_memory_recurrent: size = X MiB`
for a recurrent state. These are the numbers edge_ai.kv_cache predicts, so tests compare to them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from runtime.llamacpp import log as llama_log

MIB = 1024**2
ROUNDING = 0.005 * MIB  # llama.cpp prints MiB with two decimals
KV_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB")
RECURRENT_LINE = re.compile(r"llama_memory_recurrent: size = +([\d.]+) MiB")


def context_log(path: Path, caplog: pytest.LogCaptureFixture, **params: object) -> str:
    """What llama.cpp logs while it loads `path` and creates a context with these `params`, then frees both.

    Through llama.h rather than llama_cpp.Llama, which cannot set n_seq_max (sequences in parallel)."""
    import llama_cpp

    llama_log.install()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llama.cpp"):
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
        assert model, f"llama.cpp could not load {path}"
        cparams = llama_cpp.llama_context_default_params()
        for name, value in {"n_threads": 2, "n_threads_batch": 2, **params}.items():
            setattr(cparams, name, value)
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if ctx:
            llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    assert ctx, f"llama.cpp could not create a context for {path}"
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "llama.cpp")


def allocated(path: Path, caplog: pytest.LogCaptureFixture, **params: object) -> tuple[float, float]:
    """(KV cache bytes, recurrent state bytes) llama.cpp allocates for `path` with these context `params`."""
    text = context_log(path, caplog, **params)
    assert KV_LINE.search(text) or RECURRENT_LINE.search(text), "llama.cpp logged no context memory"
    return (sum(float(x) for x in KV_LINE.findall(text)) * MIB,
            sum(float(x) for x in RECURRENT_LINE.findall(text)) * MIB)


def assert_close(estimate: int, reported: float, what: str) -> None:
    """Within 5% of what llama.cpp reported (and of its two-decimal rounding)."""
    assert abs(estimate - reported) <= 0.05 * reported + ROUNDING, (
        f"{what}: estimated {estimate / MIB:.3f} MiB, llama.cpp allocated {reported / MIB:.3f} MiB")

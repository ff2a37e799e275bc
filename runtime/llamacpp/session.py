"""A model and context built from llama.h directly, for a caller that watches every tensor the
graph computes (llama.cpp's `cb_eval`, which `Llama` does not expose): `edge-ai imatrix`.

The file is loaded through `load.ensure_loads` first, like every model load, so a malformed file
is one line instead of an abort.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from edge_ai.errors import EdgeAIError, ModelLoadError
from runtime.llamacpp import log as llama_log
from runtime.llamacpp.load import ensure_loads
from runtime.llamacpp.model import Batch, Memory, bos_to_insert

EvalCallback = Callable[[int, bool, int], bool]  # (ggml_tensor *, ask, user data) -> go on


def eval_callback(fn: EvalCallback) -> Any:
    """`fn` as a ggml_backend_sched_eval_callback; keep the result alive while a context uses it."""
    return llama_cpp.ggml_backend_sched_eval_callback(fn)


class EvalSession:
    """A CPU model + one context of `n_ctx` tokens whose graph calls `callback` (from `eval_callback`)."""

    def __init__(self, model: Path, n_ctx: int, n_batch: int, threads: int, callback: Any) -> None:
        ensure_loads(model, dict(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=threads,
                                 n_threads_batch=threads, n_gpu_layers=0))
        llama_log.install()
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0  # CPU: activations stay in host memory
        mark = llama_log.mark()
        self.model = llama_cpp.llama_model_load_from_file(str(model).encode(), mparams)
        if not self.model:
            reason = "; ".join(llama_log.errors_since(mark)) or "no reason given"
            raise ModelLoadError(f"llama.cpp could not load {model.name}: {reason}; "
                                 "check the file with `edge-ai models info`")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.bos = bos_to_insert(self.vocab)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.embeddings = False
        cparams.no_perf = True
        cparams.cb_eval = callback
        cparams.cb_eval_user_data = None
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise EdgeAIError(f"llama.cpp could not create a context of {n_ctx} tokens for {model.name}; "
                              "see the log, or try a smaller --ctx")
        self.memory = Memory(self.ctx)
        self.batch = Batch(n_batch)

    def close(self) -> None:
        self.batch.close()
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)

    def tokenize(self, text: str) -> list[int]:
        """`text` as tokens, with BOS when the model adds one, special tokens not parsed."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, capacity, True, False)
            if n >= 0:
                return list(buf[:n])
            capacity = -n

    def run(self, tokens: Sequence[int], check: Callable[[int], None]) -> None:
        """Evaluate `tokens` from an empty cache at position 0, every position an output (so the
        last layer is not pruned to one row); `check(status)` after every llama_decode."""
        self.memory.clear()
        self.batch.decode(self.ctx, tokens, check)

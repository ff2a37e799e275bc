"""Importance matrix from calibration text, like llama.cpp's `llama-imatrix`, on llama-cpp-python.

    report = compute_imatrix(Path("model.gguf"), text, Path("model.imatrix.gguf"), ctx=512)

How it works (mirrors tools/imatrix/imatrix.cpp): the llama context gets an eval callback
(`cb_eval`). The scheduler first *asks* about every graph node; we answer yes for MUL_MAT and
MUL_MAT_ID nodes whose src0 is a model weight (`blk.*`) and whose src1 (the activations) is F32.
After such a node is computed the callback is called again and we read src1 through a ctypes
mirror of `struct ggml_tensor` (`runtime.llamacpp.ggml_tensor`, checked against this build first):

* MUL_MAT: src1 is [n_per_row, n_tokens, ...]; each column's sum of squares over the tokens is
  added to `in_sum2[name]` and the token count to `counts[name]` (one row per matrix of a 3-D weight).
* MUL_MAT_ID (MoE experts): src2 holds the experts chosen for every token; each token's row is
  added to the chosen experts' rows only, and each expert counts its own tokens (n_mat = n_expert).
  The same ids give the expert usage table: per layer, how often each expert was chosen.

The text is tokenized once (with BOS), cut into chunks of `ctx` tokens; each chunk starts from an
empty KV cache at position 0 with its first token replaced by BOS, as llama-imatrix does. Every
token is marked as an output so the last layer runs on all tokens (llama.cpp otherwise prunes it to
the output rows), but the vocabulary projection is skipped: the callback stops the graph right
after `result_norm`, which for a 262k vocabulary is most of the work. So no perplexity is printed.

Output: llama.cpp's GGUF imatrix, written by `convert.imatrix_file.write_imatrix` (`general.type =
imatrix`, `<weight>.in_sum2` F32 ne=[n_per_row, n_mat], `<weight>.counts` F32 ne=[1, n_mat],
`imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`). For MoE models the expert usage
goes into the same file as extra I32 tensors `blk.N.ffn_expert_counts` (ne=[n_expert]) plus
`imatrix.expert_counts = true`. That is safe for llama.cpp: its imatrix loaders (llama-quantize,
llama-imatrix --in-file, common_imatrix_load) only pick up tensors ending in `.in_sum2`, `.in_sum`
and `.counts` and ignore every other tensor, and `_expert_counts` does not end in `.counts`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert.chunks import MIN_CTX, first_token_bos
from convert.imatrix_file import EXPERT_COUNTS_KEY, ImatrixEntry, write_imatrix
from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_path
from edge_ai.gguf_file import check_gguf
from edge_ai.hardware import default_threads
from edge_ai.memory import check_fits_in_ram
from runtime.llamacpp import ggml_tensor as gt

DEFAULT_CTX = 512
_OUTPUT_BUDGET_BYTES = 128 << 20  # f32 logits of one decode call; Gemma's 262k vocab -> 128 tokens
_STOP_NODE = "result_norm"  # the final norm: everything after it is the vocabulary projection
_LAYER = re.compile(r"^blk\.(\d+)\.")


# --- collection -----------------------------------------------------------------------------------

@dataclass
class ImatrixReport:
    output: Path
    chunks: int  # chunks processed
    chunk_size: int
    tokens: int  # tokens run through the model (chunks x chunk_size)
    text_tokens: int  # tokens in the whole text
    tensors: int  # imatrix entries written
    expert_counts: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> times each expert was chosen
    seconds: float = 0.0

    @property
    def experts_per_token(self) -> int:
        """Experts chosen per token (0 for a dense model)."""
        if not self.expert_counts or not self.tokens:
            return 0
        return int(next(iter(self.expert_counts.values())).sum()) // self.tokens


def _weight_name(raw: bytes | str) -> str:
    """'CUDA0#blk.0.attn_k.weight#0' -> 'blk.0.attn_k.weight' (llama-imatrix's filter_tensor_name)."""
    name = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    parts = name.split("#")
    return parts[1] if len(parts) > 1 else name


class _Collector:
    """The cb_eval callback and the sums it accumulates (float64, written as float32)."""

    def __init__(self) -> None:
        gt.verify_layout()
        self.mul_mat = gt.op_id("MUL_MAT")
        self.mul_mat_id = gt.op_id("MUL_MAT_ID")
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.expert_counts: dict[int, np.ndarray] = {}
        self._expert_source: dict[int, str] = {}  # layer -> the one expert weight its usage is counted from
        self.error: BaseException | None = None
        from runtime.llamacpp.session import eval_callback  # imports llama_cpp: only when computing

        self.callback = eval_callback(self._callback)

    def _callback(self, address: int, ask: bool, user_data: int) -> bool:
        # An exception must not escape into C (ctypes would print it and return false); keep the
        # first one and stop this graph, the caller re-raises it after llama_decode.
        try:
            if ask:
                return self._wanted(address)
            t = gt.tensor_at(address)
            if t.op == self.mul_mat:
                self._collect_dense(t)
            elif t.op == self.mul_mat_id:
                self._collect_experts(t)
            else:  # the final norm: the rest of the graph is the vocabulary projection we do not need
                return False
            return True
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            if self.error is None:
                self.error = exc
            return False

    def check(self, rc: int) -> None:
        """After each llama_decode: re-raise what the callback caught, or a failed decode."""
        if self.error is not None:
            error, self.error = self.error, None
            if isinstance(error, EdgeAIError) or not isinstance(error, Exception):
                raise error  # KeyboardInterrupt & co. unchanged
            raise EdgeAIError(f"reading activations failed: {error}") from error
        if rc != 0:
            raise EdgeAIError(f"llama.cpp failed to evaluate a chunk (llama_decode returned {rc}); see the log")

    def _wanted(self, address: int) -> bool:
        t = gt.tensor_at(address)
        if t.op not in (self.mul_mat, self.mul_mat_id):
            return t.tensor_name == _STOP_NODE
        if not t.src[0] or not t.src[1]:
            return False
        src0, src1 = gt.tensor_at(t.src[0]), gt.tensor_at(t.src[1])
        if src1.type != gt.GGML_TYPE_F32 or not _weight_name(src0.name).startswith("blk."):
            return False
        return t.op == self.mul_mat or bool(t.src[2])

    def _collect_dense(self, t: gt.GGMLTensor) -> None:
        src0 = gt.tensor_at(t.src[0])
        name = _weight_name(src0.name)
        self.add_dense(name, gt.to_numpy(t.src[1]), src0.ne[2], src0.ne[3])

    def add_dense(self, name: str, x: np.ndarray, ne02: int, ne03: int) -> None:
        """Add src1 `x` (numpy order: ne13, ne12, ne11 = rows, ne10 = n_per_row) of a MUL_MAT whose
        weight has ne02 x ne03 matrices. ggml broadcasts each weight matrix over ne12 / ne02
        consecutive src1 matrices (and ne13 / ne03 along dim 3): src1 matrix (i2, i3) multiplies
        weight matrix (i2 // (ne12 // ne02), i3 // (ne13 // ne03)), as in ggml_compute_forward_mul_mat
        and llama-imatrix."""
        ne13, ne12, n_rows, n_per_row = x.shape
        if ne12 % ne02 or ne13 % ne03:
            raise RuntimeError(f"MUL_MAT of {name}: src1 {ne12}x{ne13} matrices do not broadcast over "
                               f"the weight's {ne02}x{ne03}")
        r2, r3 = ne12 // ne02, ne13 // ne03
        sums, counts = self._entry(name, ne02 * ne03, n_per_row)
        squares = np.einsum("abrj,abrj->abj", x, x, dtype=np.float64)  # sum over rows
        for i3 in range(ne13):
            for i2 in range(ne12):
                mat = (i3 // r3) * ne02 + i2 // r2
                sums[mat] += squares[i3, i2]
                counts[mat] += n_rows

    def _collect_experts(self, t: gt.GGMLTensor) -> None:
        src0, src1, ids_t = gt.tensor_at(t.src[0]), gt.tensor_at(t.src[1]), gt.tensor_at(t.src[2])
        name = _weight_name(src0.name)
        n_expert = src0.ne[2]
        if ids_t.type != gt.GGML_TYPE_I32 or src1.ne[3] != 1 or ids_t.ne[1] != src1.ne[2]:
            raise RuntimeError(f"unexpected MUL_MAT_ID operands for {name}: src1 {src1.shape}, ids {ids_t.shape}")
        ids = gt.to_numpy(t.src[2]).reshape(ids_t.ne[1], ids_t.ne[0])  # (tokens, experts used)
        x = gt.to_numpy(t.src[1]).reshape(src1.ne[2], src1.ne[1], src1.ne[0])  # (tokens, ne1, n_per_row)
        if ids.size and (ids.min() < 0 or ids.max() >= n_expert):
            raise RuntimeError(f"expert id out of range 0..{n_expert - 1} in {name}")
        # slot k of a token reads src1 row k % ne1 (ne1 is 1 when every expert gets the same input)
        rows = x[:, np.arange(ids.shape[1]) % x.shape[1], :].reshape(-1, x.shape[2])
        flat = ids.reshape(-1)
        sums, counts = self._entry(name, n_expert, x.shape[2])
        order = np.argsort(flat, kind="stable")
        experts, starts = np.unique(flat[order], return_index=True)
        squares = np.square(rows[order], dtype=np.float64)
        sums[experts] += np.add.reduceat(squares, starts, axis=0)
        chosen = np.bincount(flat, minlength=n_expert)
        counts += chosen
        match = _LAYER.match(name)
        if match:
            layer = int(match.group(1))
            source = self._expert_source.setdefault(layer, name)
            if source == name:  # gate, up and down all see the same ids: count them once
                usage = self.expert_counts.setdefault(layer, np.zeros(n_expert, dtype=np.int64))
                usage += chosen

    def _entry(self, name: str, n_mat: int, n_per_row: int) -> tuple[np.ndarray, np.ndarray]:
        sums = self.sums.get(name)
        if sums is None:
            sums = self.sums[name] = np.zeros((n_mat, n_per_row), dtype=np.float64)
            self.counts[name] = np.zeros(n_mat, dtype=np.int64)
        elif sums.shape != (n_mat, n_per_row):
            raise RuntimeError(f"inconsistent shape for {name}: {sums.shape} vs {(n_mat, n_per_row)}")
        return sums, self.counts[name]

    def entries(self) -> dict[str, ImatrixEntry]:
        out = {}
        for name, sums in self.sums.items():
            if not np.all(np.isfinite(sums)):
                raise EdgeAIError(f"the activations of {name} overflowed to inf/NaN; the model is broken or "
                                  "needs a higher-precision quantization")
            out[name] = ImatrixEntry(sums.astype(np.float32), self.counts[name].astype(np.float32))
        return out


# --- running the model ----------------------------------------------------------------------------

def compute_imatrix(model: Path, text: str, out: Path, *, ctx: int = DEFAULT_CTX, threads: int = 0,
                    max_chunks: int | None = None, progress: Callable[[int, int], None] | None = None,
                    dataset: str = "calibration text") -> ImatrixReport:
    """Run `text` through `model` in chunks of `ctx` tokens and write the importance matrix to `out`.

    `progress(done, total)` is called after each chunk; `dataset` is stored as imatrix.datasets
    (llama-imatrix stores the text file's path). Raises EdgeAIError with a one-line reason.
    """
    start = time.monotonic()
    model, out = Path(model), Path(out)
    info = check_gguf(model)
    if not isinstance(ctx, int) or ctx < MIN_CTX:
        raise EdgeAIError(f"chunk size {ctx} is too small; use at least {MIN_CTX} tokens (llama-imatrix uses 512)")
    if info.context_length and ctx > info.context_length:
        raise EdgeAIError(f"chunk size {ctx} is larger than {model.name}'s context of {info.context_length} "
                          "tokens; use a smaller --ctx")
    if max_chunks is not None and max_chunks < 1:
        raise EdgeAIError(f"max chunks must be at least 1, not {max_chunks}")
    if not text.strip():
        raise EdgeAIError(f"the {dataset} is empty; give a text file with at least {ctx * 3 // 4} words")
    if out.is_dir():
        raise EdgeAIError(f"{out} is a directory; give the imatrix file name, e.g. {out / 'imatrix.gguf'}")
    with contextlib.suppress(OSError):
        if out.resolve() == model.resolve():
            raise EdgeAIError(f"the output {out} is the model itself; choose another file name")

    from runtime.llamacpp.session import EvalSession  # imports llama_cpp: only when actually computing

    n_vocab = _vocab_size(info)
    n_batch = min(ctx, max(MIN_CTX, _OUTPUT_BUDGET_BYTES // (4 * max(n_vocab, 1))))
    check_fits_in_ram(info, ctx, n_batch)
    collector = _Collector()
    # atomic_path fails now (before the long run) if the output directory is not writable, and
    # leaves nothing behind if anything below fails.
    with atomic_path(out) as tmp, contextlib.closing(
            EvalSession(model, ctx, n_batch, threads or default_threads(), collector.callback)) as session:
        tokens = session.tokenize(text)
        if len(tokens) < ctx:
            raise EdgeAIError(f"the calibration text has only {len(tokens)} tokens but one chunk needs {ctx}; "
                              f"give at least {ctx} tokens of text (about {ctx * 3 // 4} words) or lower --ctx")
        n_chunks = len(tokens) // ctx if max_chunks is None else min(max_chunks, len(tokens) // ctx)
        for chunk in range(n_chunks):
            session.run(first_token_bos(tokens[chunk * ctx:(chunk + 1) * ctx], session.bos), collector.check)
            if progress is not None:
                progress(chunk + 1, n_chunks)
        entries = collector.entries()
        if not entries:
            raise EdgeAIError(f"{model.name} ran no weight matrix multiplications (blk.*); "
                              "an importance matrix needs a transformer LLM")
        expert_counts = {layer: counts.copy() for layer, counts in sorted(collector.expert_counts.items())}
        write_imatrix(tmp, entries, [dataset], n_chunks, ctx, expert_counts)
    return ImatrixReport(output=out, chunks=n_chunks, chunk_size=ctx, tokens=n_chunks * ctx,
                         text_tokens=len(tokens), tensors=len(entries), expert_counts=expert_counts,
                         seconds=time.monotonic() - start)


def _vocab_size(info) -> int:
    tokens = info.metadata.get("tokenizer.ggml.tokens")
    return int(getattr(tokens, "length", None) or len(tokens or []) or 32000)


__all__ = ["EXPERT_COUNTS_KEY", "ImatrixReport", "compute_imatrix"]

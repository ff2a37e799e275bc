"""Measure what quantization costs: perplexity, KL divergence against a reference, size and speed.

    report = evaluate(Path("model-Q4_0.gguf"), text, reference=Path("model-F16.gguf"), ctx=512)
    rows = sweep(Path("model-F16.gguf"), ["Q4_K_M", "Q5_K_M", "Q8_0"], text, workdir=Path("quants"))
    best = pick(rows, max_size=parse_size("4GiB"), max_kld=0.05)
    rich.print(format_table(rows, picked=best))

Perplexity follows llama.cpp's `llama-perplexity`: the text is tokenized once (with BOS), cut
into non-overlapping windows of `ctx` tokens whose first token is replaced by BOS, and only the
second half of each window is scored, so every scored token has at least ctx/2 tokens of context.
PPL = exp(mean NLL) with the standard error of the mean carried through. With `stride`, windows
start every `stride` tokens and score only their last `stride` tokens instead.

Against a reference model (same vocabulary), every scored position also gets the KL divergence
KL(reference || model) of the two next-token distributions and whether both rank the same token
first (llama.cpp's "Same top p"). Both models evaluate the same window side by side, and only that
window's logits are ever held (llama.cpp's own output buffers, read in place, turned into
log-probabilities in blocks of rows), never the whole text's: memory stays at about
2 x ctx/2 x vocabulary x 4 bytes however long the text is (N + 1 buffers when `evaluate_many`
scores N models against one reference, each reference block worked out once for all of them).

Speed is a separate short run after scoring: a `ctx`-token prefill that only computes the last
logits (tok/s like llama-bench pp) and a greedy decode of `decode_tokens` tokens (like tg).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from convert.chunks import MIN_CTX, first_token_bos
from convert.quantize import (
    MIB,
    QuantizeReport,
    default_output_path,
    quantize,
    resolve_type,
)
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import GGUFInfo, check_gguf
from edge_ai.hardware import GIB, default_threads
from edge_ai.memory import footprint
from runtime.llamacpp import model as llama
from runtime.llamacpp.load import load_llama

ROW_BLOCK = 16  # positions turned into log-probabilities at once (16 x 262k vocab x 4 B = 16 MiB per array)
DECODE_TOKENS = 16


# --- reports -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalReport:
    model: Path
    reference: Path | None
    ctx: int
    stride: int | None
    n_chunks: int
    n_scored: int  # token predictions scored
    ppl: float
    ppl_err: float  # standard error
    file_bytes: int
    n_params: int
    bpw: float  # tensor bits per weight, as llama.cpp reports it
    seconds: float
    reference_ppl: float | None = None
    reference_ppl_err: float | None = None
    kld_mean: float | None = None
    kld_err: float | None = None
    kld_median: float | None = None
    kld_p99: float | None = None
    kld_max: float | None = None
    top1: float | None = None  # % of positions where both models' most likely token is the same
    top1_err: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None

    @property
    def delta_ppl(self) -> float | None:
        return None if self.reference_ppl is None else self.ppl - self.reference_ppl

    @property
    def size_mib(self) -> float:
        return self.file_bytes / MIB

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = str(self.model)
        data["reference"] = str(self.reference) if self.reference else None
        data["delta_ppl"] = self.delta_ppl
        data["size_mib"] = self.size_mib
        return _finite(data)


@dataclass(frozen=True)
class SweepRow:
    """One line of a quantization table."""

    type: str
    path: Path
    size_bytes: int
    bpw: float
    ppl: float | None = None
    ppl_err: float | None = None
    delta_ppl: float | None = None
    kld_mean: float | None = None
    kld_p99: float | None = None
    kld_max: float | None = None
    top1: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    quantize_seconds: float | None = None
    reference: bool = False
    skipped: str | None = None  # why this type was not evaluated

    @property
    def size_mib(self) -> float:
        return self.size_bytes / MIB

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["size_mib"] = self.size_mib
        return _finite(data)


def _finite(data: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: such values become None."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


# --- evaluation ----------------------------------------------------------------------------------


def evaluate(model: Path, text: str, *, reference: Path | None = None, ctx: int = 512, stride: int | None = None,
             threads: int = 0, max_chunks: int | None = None, speed: bool = True,
             decode_tokens: int = DECODE_TOKENS, progress: Callable[[int, int], None] | None = None) -> EvalReport:
    """Perplexity of `model` on `text` (and KL divergence / top-1 agreement against `reference`).

    progress(done_chunks, total_chunks) is called after every window.
    """
    return evaluate_many([model], text, reference=reference, ctx=ctx, stride=stride, threads=threads,
                         max_chunks=max_chunks, speed=speed, decode_tokens=decode_tokens, progress=progress)[0]


def evaluate_many(models: Sequence[Path], text: str, *, reference: Path | None = None, ctx: int = 512,
                  stride: int | None = None, threads: int = 0, max_chunks: int | None = None, speed: bool = True,
                  decode_tokens: int = DECODE_TOKENS,
                  progress: Callable[[int, int], None] | None = None) -> list[EvalReport]:
    """`evaluate` for several models at once, all loaded side by side: each window is decoded by
    the reference once for all of them, instead of once per model (in a sweep the reference is
    usually the largest model, so this roughly halves the work). `seconds` is the whole run's."""
    started = time.perf_counter()
    models = [Path(m).expanduser() for m in models]
    if not models:
        raise EdgeAIError("no model to evaluate")
    if ctx < MIN_CTX:
        raise EdgeAIError(f"context {ctx} is too small; use at least {MIN_CTX} tokens (llama-perplexity uses 512)")
    if stride is not None and not 1 <= stride < ctx:
        raise EdgeAIError(f"stride {stride} must be between 1 and ctx - 1 ({ctx - 1})")
    if max_chunks is not None and max_chunks < 1:
        raise EdgeAIError("max_chunks must be at least 1")
    if not text.strip():
        raise EdgeAIError("the evaluation text is empty; pass a text file with a few thousand words")
    threads = threads or default_threads()
    infos = [check_gguf(m) for m in models]
    ref_info = check_gguf(Path(reference).expanduser()) if reference is not None else None
    n_ctx = ctx + (decode_tokens if speed else 0)
    _check_memory([*infos, *([ref_info] if ref_info else [])], n_ctx, ctx)

    with contextlib.ExitStack() as stack:
        scorers = [stack.enter_context(_Scorer.open(info, n_ctx, ctx, threads)) for info in infos]
        ref = stack.enter_context(_Scorer.open(ref_info, n_ctx, ctx, threads)) if ref_info else None
        tokens = scorers[0].tokenize(text)
        for other in scorers[1:]:
            _check_same_vocabulary(scorers[0], other, tokens, text, is_reference=False)
        if ref is not None:
            _check_same_vocabulary(scorers[0], ref, tokens, text, is_reference=True)
        windows = _windows(len(tokens), ctx, stride, max_chunks)
        stats = [_Stats() for _ in scorers]
        for done, (start, first) in enumerate(windows, 1):
            window = first_token_bos(tokens[start:start + ctx], scorers[0].bos)
            targets = np.asarray(window[first + 1:], dtype=np.int64)
            ref_logits = ref.logits(window, first) if ref is not None else None
            _add_window(stats, [scorer.logits(window, first) for scorer in scorers], ref_logits, targets)
            if progress is not None:
                progress(done, len(windows))
        speeds = [scorer.speed(list(tokens[:ctx]), decode_tokens) if speed else (None, None) for scorer in scorers]

    seconds = time.perf_counter() - started
    return [_report(model, info, stat, reference, ctx, stride, len(windows), seconds, prefill_tps, decode_tps)
            for model, info, stat, (prefill_tps, decode_tps) in zip(models, infos, stats, speeds)]


def _report(model: Path, info: GGUFInfo, stats: _Stats, reference: Path | None, ctx: int, stride: int | None,
            n_chunks: int, seconds: float, prefill_tps: float | None, decode_tps: float | None) -> EvalReport:
    ppl, ppl_err = stats.ppl(stats.nll)
    ref_ppl, ref_ppl_err = stats.ppl(stats.ref_nll) if reference is not None else (None, None)
    kld = stats.kld_summary() if reference is not None else {}
    return EvalReport(
        model=model, reference=Path(reference) if reference is not None else None, ctx=ctx, stride=stride,
        n_chunks=n_chunks, n_scored=stats.count, ppl=ppl, ppl_err=ppl_err, file_bytes=info.file_size,
        n_params=info.parameter_count, bpw=info.bits_per_weight, seconds=seconds,
        reference_ppl=ref_ppl, reference_ppl_err=ref_ppl_err, prefill_tps=prefill_tps, decode_tps=decode_tps,
        **kld,
    )


def _windows(n_tokens: int, ctx: int, stride: int | None, max_chunks: int | None) -> list[tuple[int, int]]:
    """(start, first scored position) of each window."""
    if n_tokens < ctx:
        raise EdgeAIError(
            f"the text is only {n_tokens} tokens but one evaluation window needs {ctx}; "
            "use a longer text or a smaller context"
        )
    if stride is None:
        windows = [(k * ctx, ctx // 2) for k in range(n_tokens // ctx)]
    else:
        windows = [(k * stride, ctx - 1 - stride) for k in range((n_tokens - ctx) // stride + 1)]
    return windows[:max_chunks] if max_chunks else windows


def _scorer_memory(info: GGUFInfo, n_ctx: int, ctx: int) -> int:
    """RAM one loaded _Scorer needs: its compute buffer follows n_ubatch = min(ctx, 512)."""
    return footprint(info, n_ctx, n_ubatch=min(ctx, 512)).total


def _check_memory(infos: list[GGUFInfo], n_ctx: int, ctx: int) -> None:
    need = sum(_scorer_memory(info, n_ctx, ctx) for info in infos)
    available = psutil.virtual_memory().available
    if need > available:
        names = " and ".join(info.path.name for info in infos)
        raise EdgeAIError(
            f"evaluating {names} needs about {need / GIB:.1f} GiB but only {available / GIB:.1f} GiB of RAM is "
            "free; use a smaller context, a smaller reference model, or close other programs"
        )


def _check_same_vocabulary(model: _Scorer, other: _Scorer, tokens: Sequence[int], text: str, *,
                           is_reference: bool) -> None:
    """Positions are only comparable between models that cut the text into the same tokens."""
    role = f"the reference {other.name}" if is_reference else other.name
    why = ("KL divergence needs a reference with the same tokenizer" if is_reference
           else "models evaluated together need the same tokenizer; evaluate them one at a time")
    if model.n_vocab != other.n_vocab:
        raise EdgeAIError(f"{model.name} ({model.n_vocab} tokens) and {role} ({other.n_vocab} tokens) have "
                          f"different vocabularies; {why}")
    if list(other.tokenize(text)) != list(tokens):
        raise EdgeAIError(f"{model.name} and {role} tokenize the text differently; {why}")


class _Scorer:
    """A loaded model with one context, decoding windows and handing out their logits in place."""

    def __init__(self, info: GGUFInfo, llm: llama.Llama, n_batch: int) -> None:
        self.info, self.llm, self.n_batch = info, llm, n_batch
        self.name = info.path.name
        self.n_vocab = llm.n_vocab()
        self.bos = llama.bos_to_insert(llama.vocab(llm))  # None: the model adds no BOS
        self.batch = llama.Batch(n_batch)
        self.memory = llama.Memory(llm.ctx)

    @classmethod
    @contextlib.contextmanager
    def open(cls, info: GGUFInfo, n_ctx: int, ctx: int, threads: int) -> Iterator[_Scorer]:
        n_batch = ctx  # a whole window per decode call; the compute buffer follows n_ubatch
        llm = load_llama(info.path, dict(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=min(ctx, 512), n_threads=threads,
                                         n_threads_batch=threads))
        scorer = cls(info, llm, n_batch)
        try:
            yield scorer
        finally:
            scorer.batch.close()
            llm.close()

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=self.bos is not None, special=False)

    def _decode(self, tokens: Sequence[int], start_pos: int, first_output: int) -> None:
        """Decode `tokens` at positions start_pos..; outputs (logits) for indexes >= first_output."""
        self.batch.decode(self.llm.ctx, tokens, self._check, start_pos=start_pos, first_output=first_output)

    def _check(self, status: int) -> None:
        if status != 0:
            raise EdgeAIError(f"llama.cpp failed to evaluate {self.name} (decode returned {status}); see the log")

    def logits(self, window: Sequence[int], first: int) -> np.ndarray:
        """(len(window) - 1 - first, n_vocab) float32 logits predicting window[first+1:].

        A view into llama.cpp's output buffer, valid until this scorer decodes again. The window is
        one batch (n_batch = ctx; llama.cpp splits it into ubatches itself) so all its outputs are
        in the buffer together, in order.
        """
        self.memory.clear()
        self._decode(window[:-1], 0, first)  # the last token predicts nothing inside the window
        return llama.logits(self.llm, len(window) - 1 - first)

    def speed(self, prompt: Sequence[int], n_decode: int) -> tuple[float, float]:
        """(prefill tok/s with only the last logits, greedy decode tok/s)."""
        self.memory.clear()
        t0 = time.perf_counter()
        self._decode(prompt, 0, len(prompt) - 1)
        t1 = time.perf_counter()
        token = int(np.argmax(llama.logits(self.llm, 1)))
        for i in range(n_decode):
            self._decode([token], len(prompt) + i, 0)
            token = int(np.argmax(llama.logits(self.llm, 1)))
        t2 = time.perf_counter()
        return len(prompt) / (t1 - t0), n_decode / (t2 - t1) if n_decode else float("nan")


@dataclass
class _ReferenceBlock:
    """A block of the reference's rows, worked out once and shared by every model scored against it."""

    log_probs: np.ndarray
    probs: np.ndarray
    nll: np.ndarray
    top1: np.ndarray

    @classmethod
    def of(cls, logits: np.ndarray, targets: np.ndarray) -> _ReferenceBlock:
        log_probs = _log_softmax(logits)
        return cls(log_probs, np.exp(log_probs), -log_probs[np.arange(len(targets)), targets].astype(np.float64),
                   log_probs.argmax(axis=1))


def _add_window(stats: Sequence[_Stats], logits: Sequence[np.ndarray], ref_logits: np.ndarray | None,
                targets: np.ndarray) -> None:
    """Score one window for every model, in blocks of rows (each block of the reference once)."""
    for lo in range(0, len(targets), ROW_BLOCK):
        hi = min(lo + ROW_BLOCK, len(targets))
        ref = _ReferenceBlock.of(ref_logits[lo:hi], targets[lo:hi]) if ref_logits is not None else None
        for stat, model_logits in zip(stats, logits):
            stat.add_block(model_logits[lo:hi], ref, targets[lo:hi])


class _Stats:
    """Per-position results of every window: NLL, reference NLL, KLD, same top-1."""

    def __init__(self) -> None:
        self._nll: list[np.ndarray] = []
        self._ref_nll: list[np.ndarray] = []
        self._kld: list[np.ndarray] = []
        self._same: list[np.ndarray] = []

    def add_block(self, logits: np.ndarray, ref: _ReferenceBlock | None, targets: np.ndarray) -> None:
        lp = _log_softmax(logits)
        self._nll.append(-lp[np.arange(len(targets)), targets].astype(np.float64))
        if ref is None:
            return
        self._ref_nll.append(ref.nll)
        self._same.append(ref.top1 == lp.argmax(axis=1))
        # KL(ref || model) = sum p_ref * (log p_ref - log p_model), accumulated in float64
        np.subtract(ref.log_probs, lp, out=lp)
        self._kld.append(np.einsum("ij,ij->i", ref.probs, lp, dtype=np.float64))

    @property
    def count(self) -> int:
        return int(sum(a.size for a in self._nll))

    @property
    def nll(self) -> np.ndarray:
        return np.concatenate(self._nll)

    @property
    def ref_nll(self) -> np.ndarray:
        return np.concatenate(self._ref_nll)

    @staticmethod
    def ppl(nll: np.ndarray) -> tuple[float, float]:
        """exp(mean NLL) and its standard error, like llama-perplexity."""
        mean = float(nll.mean())
        err = float(nll.std(ddof=1) / math.sqrt(nll.size)) if nll.size > 1 else float("nan")
        ppl = math.exp(mean)
        return ppl, ppl * err

    def kld_summary(self) -> dict[str, float]:
        kld = np.concatenate(self._kld)
        same = np.concatenate(self._same)
        n = kld.size
        top1 = float(same.mean())
        return {
            "kld_mean": float(kld.mean()),
            "kld_err": float(kld.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
            "kld_median": float(np.median(kld)),
            "kld_p99": float(np.percentile(kld, 99)),
            "kld_max": float(kld.max()),
            "top1": 100 * top1,
            "top1_err": 100 * math.sqrt(top1 * (1 - top1) / (n - 1)) if n > 1 else float("nan"),
        }


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax into a new float32 array (the input, llama.cpp's buffer, is not touched)."""
    out = logits - logits.max(axis=1, keepdims=True)
    sums = np.exp(out).sum(axis=1, keepdims=True, dtype=np.float64)
    out -= np.log(sums).astype(np.float32)
    return out


# --- sweeps --------------------------------------------------------------------------------------


def sweep(src: Path, types: Sequence[str], text: str, *, workdir: Path, reference: Path | None = None,
          max_size: int | None = None, ctx: int = 512, stride: int | None = None,
          max_chunks: int | None = None, threads: int = 0, imatrix: Path | None = None,
          allow_requantize: bool = True, progress: Callable[[int, int, str], None] | None = None) -> list[SweepRow]:
    """Quantize `src` to each type in `workdir` and evaluate it against `reference` (default: `src`).

    Returns the reference row first, then one row per type. Types whose planned size exceeds
    `max_size` (bytes), or that need an importance matrix when none is given, are not built
    (their row says why); a KL-divergence budget is applied afterwards by `pick`. The built types
    are evaluated together, as many at a time as fit in free RAM beside the reference, so the
    reference decodes the text once per group rather than once per type.
    progress(done, total, label) reports each step.
    """
    src = Path(src).expanduser()
    workdir = Path(workdir).expanduser()
    reference = Path(reference).expanduser() if reference is not None else src
    resolved = [resolve_type(t) for t in types]  # fail on a typo before any work
    if not resolved:
        raise EdgeAIError("no quantization types to sweep; name at least one, e.g. Q4_K_M")
    ref_info = check_gguf(reference)
    rows: dict[str, SweepRow] = {}
    built: dict[str, QuantizeReport] = {}
    paths: dict[str, Path] = {}
    total = len(resolved) + 1  # every type's quantization, then the evaluation
    for index, qt in enumerate(resolved):
        dst = workdir / default_output_path(src, qt.name).name
        if progress is not None:
            progress(index, total, f"{qt.name}: planning")
        plan = quantize(src, dst, qt.name, imatrix=imatrix, allow_requantize=allow_requantize, threads=threads,
                        dry_run=True)
        skip = _skip_reason(plan, max_size, imatrix is not None)
        if skip:
            rows[qt.name] = SweepRow(qt.name, dst, plan.output_bytes, plan.output_bpw, skipped=skip)
            continue
        if progress is not None:
            progress(index, total, f"{qt.name}: quantizing")
        built[qt.name] = quantize(src, dst, qt.name, imatrix=imatrix, allow_requantize=allow_requantize,
                                  threads=threads)
        paths[qt.name] = dst
    ref_ppl: float | None = None
    ref_ppl_err: float | None = None
    n_ctx = ctx + DECODE_TOKENS  # what evaluate_many allocates with its default speed run
    for group in _groups_that_fit(list(built), paths, ref_info, n_ctx, ctx):
        if progress is not None:
            progress(len(resolved), total, f"evaluating {', '.join(group)}")
        reports = evaluate_many([paths[name] for name in group], text, reference=reference, ctx=ctx,
                                stride=stride, threads=threads, max_chunks=max_chunks)
        for name, report in zip(group, reports):
            ref_ppl, ref_ppl_err = report.reference_ppl, report.reference_ppl_err
            b = built[name]
            rows[name] = SweepRow(
                type=name, path=paths[name], size_bytes=b.output_bytes, bpw=b.output_bpw, ppl=report.ppl,
                ppl_err=report.ppl_err, delta_ppl=report.delta_ppl, kld_mean=report.kld_mean,
                kld_p99=report.kld_p99, kld_max=report.kld_max, top1=report.top1, prefill_tps=report.prefill_tps,
                decode_tps=report.decode_tps, quantize_seconds=b.seconds,
            )
    if progress is not None:
        progress(total, total, "done")
    ref_row = SweepRow(
        type=ref_info.file_type_name, path=reference, size_bytes=ref_info.file_size, bpw=ref_info.bits_per_weight,
        ppl=ref_ppl, ppl_err=ref_ppl_err, delta_ppl=0.0 if ref_ppl is not None else None,
        kld_mean=0.0 if ref_ppl is not None else None, top1=100.0 if ref_ppl is not None else None, reference=True,
    )
    return [ref_row, *(rows[qt.name] for qt in resolved)]


def _groups_that_fit(names: list[str], paths: dict[str, Path], ref_info: GGUFInfo, n_ctx: int,
                     ctx: int) -> list[list[str]]:
    """Split `names` into consecutive groups that, with the reference, fit in free RAM together
    (a group of one always: evaluate_many then reports what does not fit)."""
    budget = psutil.virtual_memory().available - _scorer_memory(ref_info, n_ctx, ctx)
    groups: list[list[str]] = []
    used = 0
    for name in names:
        need = _scorer_memory(check_gguf(paths[name]), n_ctx, ctx)
        if groups and used + need <= budget:
            groups[-1].append(name)
            used += need
        else:
            groups.append([name])
            used = need
    return groups


def _skip_reason(plan: QuantizeReport, max_size: int | None, have_imatrix: bool) -> str | None:
    if max_size is not None and plan.output_bytes > max_size:
        return f"planned {plan.output_bytes / MIB:.1f} MiB is over the {max_size / MIB:.1f} MiB budget"
    if plan.needs_imatrix and not have_imatrix:
        return "needs an importance matrix"
    return None


def pick(rows: Sequence[SweepRow], max_size: int | None = None, max_kld: float | None = None) -> SweepRow:
    """The evaluated quantization that best spends the budgets.

    A size budget alone says "this much space, as faithful as possible": the lowest mean KLD that
    fits. A KLD budget alone says "this faithful is enough, save the space": the smallest file
    within it. Both (or neither): the lowest KLD among the types meeting every budget given.
    Ties go to the other measure (smaller file, then lower KLD)."""
    candidates = [r for r in rows if not r.reference and r.skipped is None and r.kld_mean is not None]
    fits = [r for r in candidates
            if (max_size is None or r.size_bytes <= max_size) and (max_kld is None or r.kld_mean <= max_kld)]
    if fits:
        if max_kld is not None and max_size is None:
            return min(fits, key=lambda r: (r.size_bytes, r.kld_mean))
        return min(fits, key=lambda r: (r.kld_mean, r.size_bytes))
    budget = " and ".join(
        part for part in (f"size <= {max_size / MIB:.1f} MiB" if max_size is not None else "",
                          f"KLD <= {max_kld:g}" if max_kld is not None else "") if part
    ) or "the budget"
    if not candidates:
        raise EdgeAIError(f"no quantization was evaluated within {budget}; sweep more (or smaller) types")
    smallest = min(candidates, key=lambda r: r.size_bytes)
    closest = min(candidates, key=lambda r: r.kld_mean)
    raise EdgeAIError(
        f"no quantization fits {budget}: the smallest is {smallest.type} ({smallest.size_mib:.1f} MiB, "
        f"KLD {smallest.kld_mean:.4f}), the most faithful {closest.type} ({closest.size_mib:.1f} MiB, "
        f"KLD {closest.kld_mean:.4f}); relax a budget or sweep other types"
    )


def format_table(rows: Sequence[SweepRow], picked: SweepRow | None = None) -> Any:
    """The sweep as a rich Table, llama.cpp-style."""
    from rich.table import Table

    table = Table(title="quantization sweep")
    columns = ("type", "size MiB", "bpw", "PPL", "ΔPPL", "KLD mean", "KLD p99", "top-1 %", "pp tok/s", "tg tok/s")
    for column in columns:
        table.add_column(column, justify="left" if column == "type" else "right")

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None or not math.isfinite(value) else format(value, fmt)

    for row in rows:
        name = f"{row.type} (reference)" if row.reference else row.type
        if row.skipped:
            table.add_row(name, num(row.size_mib, ".1f"), num(row.bpw, ".2f"), f"[dim]skipped: {row.skipped}[/dim]",
                          *[""] * (len(columns) - 4))
            continue
        ppl = "-" if row.ppl is None else f"{row.ppl:.3f}" + (f" ± {row.ppl_err:.3f}" if row.ppl_err else "")
        table.add_row(
            name, num(row.size_mib, ".1f"), num(row.bpw, ".2f"), ppl, num(row.delta_ppl, "+.3f"),
            num(row.kld_mean, ".5f"), num(row.kld_p99, ".4f"), num(row.top1, ".1f"), num(row.prefill_tps, ".0f"),
            num(row.decode_tps, ".1f"), style="bold green" if picked is not None and row is picked else None,
        )
    return table


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'300MB' -> 300_000_000, '1.5GiB' / '1.5G' -> 1.5 * 2**30, '12345' -> 12345 bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise EdgeAIError(f"cannot read the size {text!r}; write it like 300MB, 1.5GiB or 2G")
    number, prefix, suffix = float(match.group(1)), match.group(2).lower(), match.group(3).lower()
    power = " kmgt".index(prefix) if prefix else 0
    base = 1000 if suffix == "b" and prefix else 1024  # MB is decimal; M, MiB are binary
    return int(number * base**power)

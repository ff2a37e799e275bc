"""`edge-ai convert onnx`: export, quantize, verify against PyTorch, time, and keep one variant.

    report = convert_onnx(Path("all-MiniLM-L6-v2"), Path("minilm-onnx"), quantize="auto")
    rich.print(format_table(report))

Every variant asked for (fp32 always, as the baseline; int8 and/or int4) is built in a temporary
folder beside the output, checked by the task's probe (parity vs the PyTorch model, speed on the
same inputs in one run) and the kept one is renamed into place with its `report.json`; a failure
at any point leaves nothing under the output name. An existing output folder is refused unless
`force`, and then replaced only once the new one is complete.

`quantize="auto"` keeps the fastest variant whose parity is within the probe's budget; the report
says why each other one lost. An explicitly requested quantization that is over budget or slower
than fp32 on this machine is kept (it was asked for) with a warning that says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convert.onnx.export import export, resolve_task
from convert.onnx.probes import make_probe
from convert.onnx.quantize import Int4Options, Int8Options, quantize_folder
from edge_ai.errors import EdgeAIError
from edge_ai.hardware import cpu_flags

Progress = Callable[..., None]
QUANTIZE_CHOICES = ("none", "int8", "int4", "auto")
REPORT_NAME = "report.json"
# Flags that decide whether int8 / int4 kernels are fast here (VNNI: int8 dot products; AMX: tiles).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


@dataclass
class Variant:
    precision: str  # fp32, int8, int4
    files: dict[str, int]  # graph file name -> bytes
    parity: dict[str, float]  # the probe's metrics vs PyTorch
    seconds: float  # median seconds per probe run
    speedup: float = 1.0  # fp32 seconds / these seconds
    problem: str | None = None  # why it is not acceptable (over budget, slower than fp32), or None
    scheme: str = "fp32"  # how it was quantized (Int8Options / Int4Options.describe)

    @property
    def size(self) -> int:
        return sum(self.files.values())


@dataclass
class OnnxReport:
    source: str
    output: str
    task: str
    requested: str  # none / int8 / int4 / auto
    kept: str  # the precision written to `output`
    cpu_flags: list[str]
    variants: list[Variant]
    decision: str  # why `kept` was kept
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for variant, item in zip(self.variants, data["variants"]):
            item["size"] = variant.size
        return data


def _scheme(precision: str, int4: Int4Options) -> str:
    """How the variant of `precision` was quantized (quantize_folder's default int8 scheme, or `int4`)."""
    if precision == "int8":
        return Int8Options().describe()
    return int4.describe() if precision == "int4" else "fp32"


def _quiet_transformers() -> None:
    """transformers' loading and generate notes, and its own progress bars, would bury our table
    and break the one-line errors; our progress bar says what is happening."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def convert_onnx(src: Path, out_dir: Path, *, task: str = "auto", quantize: str = "none", force: bool = False,
                 int4: Int4Options = Int4Options(), threads: int = 0,
                 progress: Progress | None = None) -> OnnxReport:
    """Export `src` to ONNX in `out_dir`, quantized as asked, with a parity and speed report."""
    start = time.perf_counter()
    src, out_dir = src.expanduser(), out_dir.expanduser()
    if quantize not in QUANTIZE_CHOICES:
        raise EdgeAIError(f"--quantize {quantize} is not one of {', '.join(QUANTIZE_CHOICES)}")
    int4.check()
    if out_dir.exists() and not force:
        raise EdgeAIError(f"{out_dir} already exists; choose another folder or pass --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeAIError(f"{out_dir} is a file; choose a folder path for the ONNX model")
    task = resolve_task(src, task)
    precisions = {"none": ["fp32"], "int8": ["fp32", "int8"], "int4": ["fp32", "int4"],
                  "auto": ["fp32", "int8", "int4"]}[quantize]
    step = _Steps(progress, total=2 + 2 * len(precisions))
    _quiet_transformers()
    workdir = make_workdir(out_dir)
    try:
        step("exporting with optimum")
        export(src, workdir / "fp32", task)
        for precision in precisions[1:]:
            step(f"quantizing {precision}")
            quantize_folder(workdir / "fp32", workdir / precision, precision, int4)
        step("running PyTorch for the reference")
        probe = make_probe(task, src, threads)
        variants = []
        for precision in precisions:
            folder = workdir / precision
            step(f"checking {precision}")
            parity = probe.parity(folder)
            step(f"timing {precision}")
            variants.append(Variant(precision, {p.name: p.stat().st_size for p in sorted(folder.glob("*.onnx"))},
                                    parity, probe.seconds_per_run(folder), problem=probe.over_budget(parity),
                                    scheme=_scheme(precision, int4)))
        kept, decision, warnings = _decide(variants, quantize)
        report = OnnxReport(str(src), str(out_dir), task, quantize, kept.precision, _flags(), variants, decision,
                            warnings)
        report.seconds = time.perf_counter() - start
        (workdir / kept.precision / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        move_into_place(workdir / kept.precision, out_dir)
        return report
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class _Steps:
    """Counts progress steps for the CLI bar."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, label: str) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total, label)
        self.done += 1


def _flags() -> list[str]:
    have = cpu_flags()
    return [flag for flag in SPEED_FLAGS if flag in have]


def _decide(variants: list[Variant], requested: str) -> tuple[Variant, str, list[str]]:
    """The variant to keep, why, and the warnings to show; marks slower-than-fp32 variants."""
    fp32 = variants[0]
    for variant in variants:
        variant.speedup = fp32.seconds / variant.seconds if variant.seconds > 0 else 0.0
        if variant is not fp32 and variant.speedup < 1.0:
            slower = f"slower than fp32 on this CPU ({variant.speedup:.2f}x)"
            variant.problem = f"{variant.problem}; {slower}" if variant.problem else slower
    if requested == "none":
        return fp32, "fp32 was asked for (--quantize none)", []
    if requested != "auto":
        chosen = variants[-1]
        warnings = [f"{chosen.precision}: {chosen.problem}"] if chosen.problem else []
        return chosen, f"{chosen.precision} was asked for (--quantize {requested})", warnings
    good = [v for v in variants[1:] if v.problem is None]
    if not good:
        losers = "; ".join(f"{v.precision}: {v.problem}" for v in variants[1:])
        return fp32, f"kept fp32: no quantized variant is within budget and faster ({losers})", []
    best = max(good, key=lambda v: v.speedup)
    others = [f"{v.precision}: {v.problem or f'slower than {best.precision} ({v.speedup:.2f}x vs {best.speedup:.2f}x)'}"
              for v in variants[1:] if v is not best]
    why = f"kept {best.precision}: fastest within the accuracy budget ({best.speedup:.2f}x fp32)"
    return best, why + (f"; {'; '.join(others)}" if others else ""), []


def make_workdir(out_dir: Path) -> Path:
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise EdgeAIError(f"cannot write to {out_dir.parent}: {exc.strerror}; choose a writable location") from None


def move_into_place(folder: Path, out_dir: Path) -> None:
    """Rename the finished `folder` onto `out_dir`; an existing one (--force) is removed only afterwards."""
    old = None
    if out_dir.exists():
        old = folder.parent / "previous"
        os.replace(out_dir, old)
    try:
        os.replace(folder, out_dir)
    except OSError:
        if old is not None:
            os.replace(old, out_dir)  # put the user's folder back
        raise


def format_table(report: OnnxReport) -> Any:
    """The variants side by side as a rich Table: size, parity, speed (the reasons are in `decision`)."""
    from rich.table import Table

    metrics = list(report.variants[0].parity)
    flags = " ".join(report.cpu_flags) or "none of " + ", ".join(SPEED_FLAGS)
    table = Table(title=f"ONNX {report.task} · CPU flags: {flags}")
    for column in ("variant", "size MiB", *metrics, "ms/run", "vs fp32", "ok"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for v in report.variants:
        name = f"{v.precision} (kept)" if v.precision == report.kept else v.precision
        table.add_row(name, f"{v.size / 2**20:.1f}", *(_fmt(v.parity[m]) for m in metrics),
                      f"{v.seconds * 1000:.1f}", f"{v.speedup:.2f}x", "no" if v.problem else "yes",
                      style="bold green" if v.precision == report.kept else None)
    return table


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"

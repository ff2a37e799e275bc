"""`edge-ai doctor`: what this machine has, what is wrong, and how to fix each problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edge_ai import config as config_mod
from edge_ai import registry
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import diagnose, read_gguf
from edge_ai.hardware import GIB, HardwareReport, probe
from edge_ai.memory import ModelFit
from edge_ai.paths import get_paths

# runtime.planner.plan.model_fit, given by the CLI (the core does not import the runtime):
# fit(info, ram=, ctx=, n_ubatch=, swa_full=, gpu_backend=) -> the planner's verdict
FitFn = Callable[..., ModelFit]


def _problems(report: HardwareReport) -> list[str]:
    problems = []
    if report.simd and "avx2" not in report.simd and "neon" not in report.simd and "asimd" not in report.simd:
        problems.append("CPU lacks AVX2: generation will be slow; prefer small Q4_0 models")
    if report.ram_available < 1 * GIB:
        problems.append(f"only {report.ram_available / GIB:.1f} GiB RAM free: close programs before loading a model")
    if report.display is None:
        problems.append("no display (DISPLAY/WAYLAND_DISPLAY unset): screen context is unavailable; "
                        "run inside a desktop session")
    if report.audio.startswith(("unavailable", "no devices")):
        problems.append(f"audio {report.audio}: voice mode is unavailable")
    return problems


def _models_dir_summary(models_dir: Path) -> str:
    """Where assembled models live and how much room they take (the model cache)."""
    files = [f for f in models_dir.glob("*.gguf") if f.is_file()] if models_dir.is_dir() else []
    size = sum(f.stat().st_size for f in files)
    return f"{models_dir} ({len(files)} file{'s' if len(files) != 1 else ''}, {size / GIB:.2f} GiB)"


def run_doctor(console: Console, llama_backends: str, gpu_offload: bool, *, fit: FitFn) -> int:
    """Print the report; return 1 if the config is broken or a registered model cannot be used, else 0.

    `llama_backends` and `gpu_offload` describe the llama.cpp build (`runtime.llamacpp.system.build()`);
    `fit` is the memory planner's verdict on a model in the free RAM (`runtime.planner.plan.model_fit`):
    fits, fits with experts in RAM, pages from disk, or does not fit, one line per model.

    A broken config is reported as a problem (with the defaults used for the rest of the report)
    rather than ending the report half-way: doctor is what a user runs when something is wrong.
    """
    report = probe(llama_backends, gpu_offload)
    paths = get_paths()
    problems = _problems(report)
    try:
        cfg = config_mod.load()
        config_broken = False
    except EdgeAIError as exc:
        problems.append(f"config: {exc}")
        cfg, config_broken = config_mod.Config(), True
    table = Table("check", "result", box=None, show_header=False)
    table.add_row("CPU", f"{report.cpu_model} ({report.physical_cores} cores, {report.logical_cores} threads)")
    table.add_row("SIMD", ", ".join(report.simd) or "none detected")
    table.add_row("RAM", f"{report.ram_available / GIB:.1f} GiB free of {report.ram_total / GIB:.1f} GiB")
    table.add_row("llama.cpp", report.llama_backends)
    table.add_row("GPU offload", "yes" if report.gpu_offload else "no (CPU build)")
    table.add_row("display", report.display or "none")
    table.add_row("audio", report.audio)
    table.add_row("config", str(paths.config_file))
    table.add_row("data", str(paths.data_dir))
    table.add_row("model cache", _models_dir_summary(paths.models_dir))
    table.add_row("cache", str(paths.cache_dir))
    table.add_row("log", str(paths.log_file))
    console.print(table)

    model_failed = False
    context, batch = cfg.model.context, cfg.model.batch
    models = Table("model", "size", f"RAM at context {context}", "fit (memory planner)", "status", box=None)
    for entry in registry.list_models():
        if not entry.available:
            if entry.source == "user":
                models.add_row(entry.name, "", "", "", f"file missing: {entry.path}; `edge-ai models rm {entry.name}`")
                model_failed = True
            else:
                models.add_row(entry.name, "", "", "", "not assembled yet (done on first use)")
            continue
        try:
            info = read_gguf(entry.path)
        except EdgeAIError as exc:
            models.add_row(entry.name, "", "", "", f"broken: {exc}")
            model_failed = True
            continue
        n_ctx = min(context, info.context_length or context)
        size = f"{info.file_size / GIB:.2f} GiB"
        issues = diagnose(info)
        if issues:  # the planner sizes the model from the same header: only a sound one
            models.add_row(entry.name, size, "", "", "; ".join(issues))
            model_failed = True
            continue
        n_ctx = min(context, info.context_length or context)
        verdict = fit(info, ram=report.ram_available, ctx=n_ctx, n_ubatch=batch, swa_full=cfg.model.swa_full,
                      gpu_backend=report.gpu_offload)
        model_failed |= not verdict.fits
        ram = f"{verdict.ram / GIB:.2f} GiB (KV cache {verdict.kv_cache / 1024**2:.0f} MiB)"
        models.add_row(entry.name, size, ram, verdict.line(), "ok" if verdict.fits else "does not fit in free RAM")
    console.print(models)
    if not registry.list_models():
        problems.append("no models: run `pip install 'edge-ai[models]'` or `edge-ai models add FILE.gguf`")
    for problem in problems:
        console.print(Text("! ", style="yellow") + Text(problem))
    if not problems and not model_failed:
        console.print(Text("all good", style="green"))
    return 1 if model_failed or config_broken else 0

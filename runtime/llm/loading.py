"""Open the engine a config asks for: resolve the model name, check and load the file.

One place for the CLI, the server and the TUI. A packaged model is assembled from its parts on
first use, which takes a while; `progress(done_bytes, total_bytes)` reports it, and each caller
shows it its own way (a rich progress bar on the terminal, a status line in the app).

With RPC servers configured (`--rpc`, model.rpc) the planner splits the layers between this machine
and the servers by the memory each has, as `edge-ai plan --rpc` shows it; without, a plan saved with
`--rpc` brings its own servers and split.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from edge_ai import registry
from edge_ai.config import Config
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import check_gguf
from edge_ai.rpc_servers import parse_servers
from runtime.llamacpp import rpc
from runtime.llm.engine import Engine, EngineOptions
from runtime.planner.plan import Budget, Helper, Request, impossible_message, make_plan

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def open_engine(cfg: Config, progress: Progress | None = None, *, vision: bool = False) -> Engine:
    """The engine for `cfg.model` (a registered name or a .gguf path), loaded with its options; with
    `vision`, also with the vision projector screen.vision_mmproj names, if any (for screen images)."""
    model = cfg.model
    path = registry.resolve(model.name, progress=progress)
    mmproj = str(Path(cfg.screen.vision_mmproj).expanduser()) if vision and cfg.screen.vision_mmproj else ""
    options = EngineOptions(context=model.context, threads=model.threads, batch=model.batch,
                            swa_full=model.swa_full, chat_format=registry.wanted_format(model.format, model.name),
                            mmproj=mmproj)
    name = model.name if model.name in registry.known_names() else path.stem
    options = with_saved_plan(options, model.name)
    if model.rpc:
        options = with_rpc(options, path, parse_servers(model.rpc, "setting model.rpc"))
    return Engine(path, name=name, options=options)


def with_rpc(options: EngineOptions, path: Path, servers: Sequence[str]) -> EngineOptions:
    """`options` with the model's layers split between this machine's free RAM and the memory each
    device of `servers` reports, at the options' context and KV cache type."""
    info = check_gguf(path)
    helpers = tuple(Helper(device.server, device.free) for device in rpc.device_memory(servers))
    plan = make_plan(info, Budget(ram=psutil.virtual_memory().available, rpc=helpers),
                     Request(ctx=options.context, kv_type=options.kv_type, n_ubatch=options.batch,
                             swa_full=options.swa_full))
    if not plan.fits:
        raise EdgeAIError(impossible_message(plan))
    if not plan.n_gpu_layers:  # a server takes one client at a time: do not hold it for nothing
        log.info("%s: every layer fits here (RPC servers %s unused)", path.name, ",".join(servers))
        return options
    return dataclasses.replace(options, n_gpu_layers=plan.n_gpu_layers, rpc_servers=tuple(plan.rpc_servers()),
                               tensor_split=tuple(float(n) for n in plan.rpc_layers))


def with_saved_plan(options: EngineOptions, model: str) -> EngineOptions:
    """`options` with the placement `edge-ai plan MODEL --apply` saved (its context wins over the
    configured one: the plan chose it to fit)."""
    saved = registry.saved_plan(model)
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(EngineOptions)})
    if unknown:
        raise EdgeAIError(f"the saved plan for {model} has unknown settings ({', '.join(unknown)}); "
                          f"run `edge-ai plan {model} --apply` again")
    if "tensor_overrides" in saved:
        saved = {**saved, "tensor_overrides": tuple(tuple(o) for o in saved["tensor_overrides"])}
    for key in ("rpc_servers", "tensor_split"):  # JSON lists back to tuples
        if key in saved:
            saved = {**saved, key: tuple(saved[key])}
    if "hot_experts" in saved:  # JSON lists back to the hashable tuples EngineOptions holds
        saved = {**saved, "hot_experts": tuple((int(il), tuple(es)) for il, es in saved["hot_experts"])}
    return dataclasses.replace(options, **saved)

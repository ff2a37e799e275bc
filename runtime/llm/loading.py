"""Open the engine a config asks for: resolve the model name, check and load the file.

One place for the CLI, the server and the TUI. A packaged model is assembled from its parts on
first use, which takes a while; `progress(done_bytes, total_bytes)` reports it, and each caller
shows it its own way (a rich progress bar on the terminal, a status line in the app).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from edge_ai import registry
from edge_ai.config import Config
from edge_ai.errors import EdgeAIError
from runtime.llm.engine import Engine, EngineOptions

Progress = Callable[[int, int], None]


def open_engine(cfg: Config, progress: Progress | None = None) -> Engine:
    """The engine for `cfg.model` (a registered name or a .gguf path), loaded with its options."""
    model = cfg.model
    path = registry.resolve(model.name, progress=progress)
    options = EngineOptions(context=model.context, threads=model.threads, batch=model.batch,
                            swa_full=model.swa_full, chat_format=registry.wanted_format(model.format, model.name))
    name = model.name if model.name in registry.known_names() else path.stem
    return Engine(path, name=name, options=with_saved_plan(options, model.name))


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
    if "hot_experts" in saved:  # JSON lists back to the hashable tuples EngineOptions holds
        saved = {**saved, "hot_experts": tuple((int(il), tuple(es)) for il, es in saved["hot_experts"])}
    return dataclasses.replace(options, **saved)

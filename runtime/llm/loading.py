"""Open the engine a config asks for: resolve the model name, check and load the file.

One place for the CLI, the server and the TUI. A packaged model is assembled from its parts on
first use, which takes a while; `progress(done_bytes, total_bytes)` reports it, and each caller
shows it its own way (a rich progress bar on the terminal, a status line in the app).
"""

from __future__ import annotations

from collections.abc import Callable

from edge_ai import registry
from edge_ai.config import Config
from runtime.llm.engine import Engine, EngineOptions

Progress = Callable[[int, int], None]


def open_engine(cfg: Config, progress: Progress | None = None) -> Engine:
    """The engine for `cfg.model` (a registered name or a .gguf path), loaded with its options."""
    model = cfg.model
    path = registry.resolve(model.name, progress=progress)
    options = EngineOptions(context=model.context, threads=model.threads, batch=model.batch,
                            swa_full=model.swa_full, chat_format=registry.wanted_format(model.format, model.name))
    name = model.name if model.name in registry.known_names() else path.stem
    return Engine(path, name=name, options=options)

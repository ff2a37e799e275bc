"""The edge-ai terminal app: owns the config, the history store and the model's scheduler.

Screens and widgets talk to it through attributes (`cfg`, `history`, `history_search`, `engines`)
and a few methods (`switch_model`, `apply_settings`, `toggle_theme`). `engines` is the model's
`runtime.llm.scheduler.Scheduler`: the model is loaded, used and freed on its one thread, and
loads report back with messages, so the event loop never waits for llama.cpp.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import App, InvalidThemeError, SystemCommand
from textual.message import Message
from textual.screen import Screen
from textual.theme import Theme

from edge_ai import config as config_mod
from edge_ai.config import Config
from edge_ai.errors import EdgeAIError
from edge_ai.history import HistoryStore
from edge_ai.paths import get_paths
from runtime.llm.interface import ChatEngine
from runtime.llm.scheduler import Scheduler
from tui.keys import COMMANDS
from tui.screens.chat import ChatScreen
from tui.search import HistorySearch

log = logging.getLogger(__name__)

EngineFactory = Callable[[Config], ChatEngine]
"""Builds an engine (`runtime.llm.engine.Engine`, or a test's scripted one) from config."""
REPLY_QUEUE = 2  # a reply the screen let go of may still be ending when the next one is sent

DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"


class EdgeAIApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "edge-ai"

    class EngineLoading(Message):
        def __init__(self, name: str, detail: str = "") -> None:
            super().__init__()
            self.name, self.detail = name, detail

    class EngineLoaded(Message):
        def __init__(self, model: config_mod.ModelSettings, engine: ChatEngine) -> None:
            super().__init__()
            self.model, self.engine = model, engine

    class EngineFailed(Message):
        def __init__(self, name: str, error: str) -> None:
            super().__init__()
            self.name, self.error = name, error

    def __init__(self, cfg: Config, *, engine_factory: EngineFactory | None = None,
                 history: HistoryStore | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self._engine_factory = engine_factory or self._default_factory
        self.engines = Scheduler(queue_size=REPLY_QUEUE, name="tui")
        self.history = history if history is not None else HistoryStore(get_paths().history_db)
        self.history_search = HistorySearch(self)
        self.model_name = cfg.model.name
        self.engine_state = "loading model…"
        self.chat_screen = ChatScreen()
        self._assembly_percent = -1
        self._load_ticket = 0  # the newest model request; older ones still waiting are skipped

    # -- lifetime ------------------------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return self.chat_screen

    def on_mount(self) -> None:
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        try:
            self.theme = self.cfg.tui.theme
        except InvalidThemeError:
            self.notify(f"unknown theme '{self.cfg.tui.theme}' in tui.theme; using {self.theme}", severity="warning")
        # After the first paint: importing llama.cpp in the worker competes for the GIL and, on
        # 2 cores, held the first frame back by ~0.2 s; the model is ready no later for it.
        self.call_after_refresh(self.load_model, self.cfg.model)

    def on_unmount(self) -> None:
        self.chat_screen.voice.close()  # stops listening and speaking before the model goes
        self.chat_screen.screen_watch.stop()
        self.engines.close()  # waits for a reply in progress to stop and be saved, frees the model
        self.history.close()

    # -- model ---------------------------------------------------------------------------------

    def _default_factory(self, cfg: Config) -> ChatEngine:
        """The configured engine (with its vision projector, if one is set, for screen images); a packaged
        model's assembly is shown in the status bar."""
        from runtime.llm.loading import open_engine

        return open_engine(cfg, progress=self._assembly_progress, vision=True)

    def _assembly_progress(self, done: int, total: int) -> None:
        percent = done * 100 // max(total, 1)
        if percent != self._assembly_percent:
            self._assembly_percent = percent
            self.post_message(self.EngineLoading(self.model_name, f"assembling model {percent}%"))

    def load_model(self, model: config_mod.ModelSettings) -> None:
        """Load `model` on the model's thread and make it current, stopping a reply in progress;
        the old engine is closed once the new one is in (and stays if the new one fails)."""
        self._load_ticket += 1
        ticket = self._load_ticket
        cfg = dataclasses.replace(self.cfg, model=model)
        self.post_message(self.EngineLoading(model.name))

        def open_engine() -> ChatEngine | None:  # a pick superseded while it waited loads nothing
            return self._engine_factory(cfg) if ticket == self._load_ticket else None

        self.engines.load(open_engine).add_done_callback(lambda future: self._loaded(model, future))

    def _loaded(self, model: config_mod.ModelSettings, future: Future[ChatEngine | None]) -> None:
        """On the model's thread: tell the app how the load ended."""
        try:
            engine = future.result()
        except EdgeAIError as exc:
            self.post_message(self.EngineFailed(model.name, str(exc)))
            return
        if engine is not None:
            self.post_message(self.EngineLoaded(model, engine))

    def switch_model(self, name: str) -> None:
        """Load the registered model `name` in a worker; the current one keeps serving until then."""
        try:
            model = self.cfg.with_values({"model.name": name}, source="the model picker").model
        except EdgeAIError as exc:
            self.notify(str(exc), severity="error")
            return
        self.load_model(model)

    def on_edge_aiapp_engine_loading(self, message: EngineLoading) -> None:
        self.engine_state = message.detail or f"loading {message.name}…"
        self.update_status()

    def on_edge_aiapp_engine_loaded(self, message: EngineLoaded) -> None:
        switched = message.model.name != self.model_name
        self.cfg = dataclasses.replace(self.cfg, model=message.model)
        self.model_name = message.model.name
        self.engine_state = "ready"
        self.update_status()
        if switched:
            self.notify(f"Loaded model {message.model.name}", title="Model")

    def on_edge_aiapp_engine_failed(self, message: EngineFailed) -> None:
        self.engine_state = "ready" if self.engines.engine is not None else "no model (Ctrl+O to pick one)"
        self.update_status()
        self.notify(message.error, title=f"Could not load {message.name}", severity="error", timeout=15)

    def update_status(self, screen: ChatScreen | None = None) -> None:
        """Push the engine's name, context and state down to the chat screen's status bar.

        The screen calls this itself when it mounts, in case the model settled before that.
        """
        screen = screen or self.chat_screen
        if not screen.query("#status"):
            return  # not composed yet; it asks again when it mounts
        engine = self.engines.engine
        if engine is None:
            screen.show_engine(self.model_name, 0, 0, self.engine_state)
        else:
            screen.show_engine(engine.name, engine.context_used, engine.n_ctx, self.engine_state)

    # -- settings and theme --------------------------------------------------------------------

    def apply_settings(self, changed: dict[str, Any]) -> None:
        """Settings the settings screen has stored; model.* changes reload the model."""
        if not changed:
            return
        self.cfg = self.cfg.with_values(changed, source="the settings screen")
        self.notify("Settings saved: " + ", ".join(sorted(changed)), title="Settings")
        if any(key.startswith("model.") for key in changed):
            self.load_model(self.cfg.model)

    def toggle_theme(self) -> None:
        self.theme = LIGHT_THEME if self.current_theme.dark else DARK_THEME

    def _theme_changed(self, theme: Theme) -> None:
        if theme.name == self.cfg.tui.theme:
            return
        try:
            config_mod.set_value("tui.theme", theme.name)
            self.cfg = self.cfg.with_values({"tui.theme": theme.name})
        except EdgeAIError as exc:
            self.notify(str(exc), severity="error")

    # -- command palette -----------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for command in COMMANDS:
            keys = f" ({command.label})" if command.label else ""
            yield SystemCommand(command.title, command.help + keys, self._runner(command.action))

    def _runner(self, action: str) -> Callable[[], Any]:
        return partial(self.chat_screen.run_action, action)


def run_app(cfg: Config) -> None:
    """Start the terminal assistant (blocks until the user quits).

    COLUMNS/LINES are dropped first: Textual sizes itself with shutil.get_terminal_size, which
    prefers those variables over the terminal itself, so a stale export (CI runners set 80x24)
    would draw an 80-column app in a wide terminal and ignore every resize.
    """
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
    with native_stderr_to(get_paths().log_file):
        EdgeAIApp(cfg).run()


@contextmanager
def native_stderr_to(log_file: Path) -> Iterator[None]:
    """Point file descriptor 2 at `log_file` while the app runs, and let Textual draw on a copy of the
    terminal. C libraries write their complaints to descriptor 2 (PortAudio's ALSA host prints
    "Expression 'ContinuePoll(...)' failed" when an audio stream hiccups), which is the terminal Textual
    draws on: a stray line tore the screen. Nothing changes when stderr is not a terminal."""
    terminal = sys.__stderr__
    log_fd = None
    if terminal is not None and terminal.isatty():
        try:
            log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:  # no log directory: the terminal it stays
            pass
    if log_fd is None:
        yield
        return
    terminal.flush()
    saved = os.dup(2)
    sys.__stderr__ = os.fdopen(os.dup(2), "w", encoding=terminal.encoding, errors=terminal.errors)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield
    finally:
        sys.__stderr__.close()
        sys.__stderr__ = terminal
        os.dup2(saved, 2)
        os.close(saved)

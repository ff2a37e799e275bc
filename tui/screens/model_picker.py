"""Pick a registered model; the app loads it in a worker and closes the old one.

Each model whose file is here also shows the memory planner's verdict at the configured context in
the RAM free now (fits / pages from disk / does not fit), worked out off the event loop: it reads
each file's header."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from edge_ai.errors import EdgeAIError
from edge_ai.registry import ModelEntry, list_models


class ModelPickerScreen(ModalScreen[str | None]):
    """Lists `edge_ai.registry.list_models()`; dismisses with the chosen name (None = cancelled)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: str) -> None:
        super().__init__(classes="dialog")
        self.current = current
        self.entries: list[ModelEntry] = []
        self.fits: dict[str, str] = {}  # model name -> the planner's one-line verdict
        self.problem = ""
        try:
            self.entries = list_models()
        except EdgeAIError as exc:
            self.problem = str(exc)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Pick a model  (Enter load, Esc cancel)", classes="dialog-title")
            options = [Option(Content(self._describe(e)), id=e.name, disabled=self._missing(e))
                       for e in self.entries]
            yield OptionList(*options, id="models")
            yield Label(self._note(), id="models-note", markup=False)

    def _note(self) -> str:
        if self.problem:
            return self.problem
        if not self.entries:
            return "no models registered; add one with `edge-ai models add PATH`"
        missing = [e.name for e in self.entries if self._missing(e)]
        if missing:
            return (f"{', '.join(missing)}: the file is gone; add it again with `edge-ai models add PATH`, "
                    "or forget it with `edge-ai models rm NAME`")
        return ""

    @staticmethod
    def _missing(entry: ModelEntry) -> bool:
        """A user model whose file is gone cannot be loaded (a package model is assembled on first use)."""
        return entry.source == "user" and not entry.available

    def _describe(self, entry: ModelEntry) -> str:
        mark = "● " if entry.name == self.current else "  "
        if self._missing(entry):
            return f"{mark}{entry.name}  [{entry.source}]  file missing: {entry.path}"
        state = "" if entry.available else "  (assembled on first use)"
        fit = f"\n     {self.fits[entry.name]}" if entry.name in self.fits else ""
        return f"{mark}{entry.name}  [{entry.source}]  {entry.path}{state}{fit}"

    @work(thread=True, exclusive=True, group="model-fit")
    def _plan_fits(self) -> None:
        """The planner's verdict for each model whose file is here, shown as each one is known."""
        import psutil

        from edge_ai.gguf_file import read_gguf
        from runtime.llamacpp.system import build
        from runtime.planner.plan import model_fit

        model = self.app.cfg.model  # the running app's settings (tui.app.EdgeAIApp)
        ram, gpu = psutil.virtual_memory().available, build()[1]
        for entry in self.entries:
            if not entry.available:
                continue
            try:
                info = read_gguf(entry.path)
                ctx = min(model.context, info.context_length or model.context)
                line = model_fit(info, ram=ram, ctx=ctx, n_ubatch=model.batch, swa_full=model.swa_full,
                                 gpu_backend=gpu).line()
            except EdgeAIError as exc:
                line = f"cannot plan: {exc}"
            self.app.call_from_thread(self._show_fit, entry, line)

    def _show_fit(self, entry: ModelEntry, line: str) -> None:
        self.fits[entry.name] = line
        self.query_one("#models", OptionList).replace_option_prompt(entry.name, Content(self._describe(entry)))

    def on_mount(self) -> None:
        option_list = self.query_one("#models", OptionList)
        names = [e.name for e in self.entries if not self._missing(e)]
        if self.current in names:
            option_list.highlighted = [e.name for e in self.entries].index(self.current)
        option_list.focus()
        self._plan_fits()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if not event.option.disabled:
            self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)

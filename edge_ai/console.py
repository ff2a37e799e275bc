"""Terminal output for the command line: one stdout and one stderr console, and progress bars.

Markup is off: model names, chat templates, prompts and paths are user data, and Rich would
parse `[/INST]` in them as a closing tag and crash.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

out = Console(markup=False, highlight=False)
err = Console(stderr=True, markup=False, highlight=False)


class ProgressBar:
    """A bar driven by `(done, total[, label])` callbacks.

    It appears on the first update (so nothing flashes when there is no work, e.g. a model already
    assembled) and disappears when the block ends. Only on a terminal: Rich draws nothing on a pipe
    but a stray newline at the end, which a script reading stderr takes for output.
    """

    def __init__(self, label: str, *, in_bytes: bool = False) -> None:
        count: ProgressColumn = DownloadColumn() if in_bytes else MofNCompleteColumn()
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), count, TimeRemainingColumn(),
                                  console=err, transient=True)
        self._label = label
        self._task = self._progress.add_task(label, total=None)
        self._started = False

    def __enter__(self) -> Callable[..., None]:
        return self.update

    def update(self, done: int, total: int | None, label: str | None = None) -> None:
        if not err.is_terminal:
            return
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(self._task, completed=done, total=total,
                              description=f"{self._label}: {label}" if label else self._label)

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._progress.stop()

"""Watch mode from the app: opt-in logging of what changes on screen, with its state always in view.

"Screen watch on/off" in the command palette starts `runtime.screen.watch.Watcher` (as configured by
`screen.watch_*`: private windows blanked, text redacted before it is stored, the owner-only log
that `edge-ai screen search` reads); Ctrl+G pauses it at once and resumes it. The status bar says
whether it is watching, how many changes it saved, or that it is paused, so it never runs unseen.
The watcher runs on a worker thread and reports with `WatchEvent` messages (posting is thread-safe
and never waits, so a tick that ends while the app is closing blocks nothing); leaving the app
stops it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from textual.message import Message

from edge_ai.errors import EdgeAIError

if TYPE_CHECKING:
    from runtime.screen.watch import Watcher
    from tui.screens.chat import ChatScreen


class WatchEvent(Message):
    """From the watcher's thread: `kind` is started (detail: what to tell the user), stored, failed
    (detail: the error) or stopped."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__()
        self.kind, self.detail = kind, detail


class ScreenWatch:
    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.saved = 0  # changes stored since watch mode was turned on
        self._watcher: Watcher | None = None
        self._stop = threading.Event()
        self._running = False  # between toggle on and the worker's end

    @property
    def paused(self) -> bool:
        return self._watcher is not None and self._watcher.paused

    def toggle(self) -> None:
        """Turn watch mode on, or off when it is on."""
        if self._running:
            self.stop()
            return
        self._running, self.saved, self._stop = True, 0, threading.Event()
        self._show("watch: starting…")
        self.screen.run_worker(self._run, thread=True, group="screen-watch", exclusive=True, exit_on_error=False)

    def toggle_pause(self) -> None:
        if self._watcher is None:
            self.screen.notify("Screen watch is off; turn it on from the command palette (Ctrl+P).", title="Screen")
            return
        if self._watcher.paused:
            self._watcher.resume()
        else:
            self._watcher.pause()
        self._show()

    def stop(self) -> None:
        """Stop watching (the worker closes the log); safe to call when it is off."""
        self._stop.set()

    def _run(self) -> None:
        """On a worker thread: watch until stopped, reporting to the app's thread."""
        from runtime.screen.watch import Watcher

        post = self.screen.post_message
        try:
            with Watcher.from_settings(self.screen.edge_app.cfg.screen) as watcher:
                self._watcher = watcher
                post(WatchEvent("started", f"Watching the screen every {watcher.options.interval:g} s (private "
                                           f"windows blanked, PII redacted) into {watcher.log.path}; Ctrl+G pauses; "
                                           "`edge-ai screen search` finds it again."))
                watcher.run(self._stop, on_store=lambda stored: post(WatchEvent("stored")))
        except Exception as exc:  # no display, an unwritable log: said, and chat goes on
            post(WatchEvent("failed", str(exc) if isinstance(exc, EdgeAIError) else f"screen watch failed: {exc}"))
        finally:
            self._watcher = None
            post(WatchEvent("stopped"))

    def handle(self, event: WatchEvent) -> None:
        """On the app's thread: what the watcher reported."""
        if event.kind == "started":
            self.screen.notify(event.detail, title="Screen watch")
        elif event.kind == "stored":
            self.saved += 1
        elif event.kind == "failed":
            self.screen.notify(event.detail, title="Screen watch", severity="error")
        elif event.kind == "stopped":
            self._running = False
        self._show()

    def _show(self, text: str | None = None) -> None:
        if text is None:
            text = ("" if not self._running else "watch paused (Ctrl+G)" if self.paused
                    else f"watching screen · {self.saved} saved")
        self.screen.status.watch = text

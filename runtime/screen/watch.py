"""Watch mode: opt-in background capture of screen changes into the local screen log.

    watcher = Watcher(ScreenLog.create(path, Retention()), WatchOptions(interval=1.0))
    watcher = Watcher.from_settings(cfg.screen)   # as configured (screen.watch_*): the CLI's and the app's
    watcher.run(stop_event, on_store=print)   # until stop_event is set; or watcher.step() for one look
    watcher.pause(); watcher.resume()

Each tick grabs the screen (private windows already blanked by runtime.screen.capture) and asks
the change detector whether it changed; an unchanged screen costs a grab and a hash, nothing more.
Only a changed frame is OCR'd, its text redacted (runtime.screen.redact) and stored with the time
and the active window's title (empty when that window is private). The order matters: nothing
unredacted or private reaches the disk.

Screenpipe's users saw >100% CPU. Here the interval is never below one second and grows (doubling,
up to `max_interval`) while the watcher's own CPU use over a window of recent ticks is above its
budget, while the machine is busy (load average per core), or while on battery; it shrinks back
when all is well. Pausing takes effect at once: a tick under way drops what it has.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_ai.errors import EdgeAIError
from runtime.screen.capture import ScreenCapture
from runtime.screen.change import ChangeDetector
from runtime.screen.ocr import ScreenOCR
from runtime.screen.privacy import PrivacyPolicy
from runtime.screen.redact import redact
from runtime.screen.screen_log import Retention, ScreenLog, default_path
from runtime.screen.windows import active_window, check_x11_session, connect

if TYPE_CHECKING:
    from edge_ai.config import ScreenSettings

MIN_INTERVAL = 1.0  # at most one frame a second, whatever is asked
EXPIRE_EVERY = 3600.0  # seconds between retention sweeps while nothing is written (each write sweeps too)


@dataclass(frozen=True)
class WatchOptions:
    interval: float = 1.0  # seconds between captures on an idle, plugged-in machine (clamped to >= MIN_INTERVAL)
    max_interval: float = 30.0  # the longest the back-off stretches it
    cpu_budget: float = 0.05  # share of one core the watcher may use, averaged over `cpu_window` ticks
    cpu_window: int = 10  # ticks the CPU average covers: one OCR'd change is allowed, a stream of them is not
    busy_load: float = 0.8  # 1-minute load average per core above which the machine counts as busy
    battery_factor: float = 4.0  # interval multiplier while on battery


@dataclass(frozen=True)
class Stored:
    """One change written to the log."""

    time: float
    title: str
    text: str  # as stored: redacted
    row: int


def machine_busy(threshold: float) -> bool:
    """Is the 1-minute load average per core above `threshold`?"""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return False
    return load / (os.cpu_count() or 1) > threshold


def on_battery() -> bool:
    """True when the OS says we run on battery; a desktop (no battery) or an unknown state is False."""
    import psutil

    try:
        battery = psutil.sensors_battery()
    except (AttributeError, NotImplementedError, OSError):
        return False
    return battery is not None and battery.power_plugged is False


class Backoff:
    """The interval policy: the base interval, doubled per level while over budget, busy or on battery."""

    def __init__(self, options: WatchOptions, busy: Callable[[], bool] | None = None,
                 battery: Callable[[], bool] = on_battery) -> None:
        self.options = options
        self._busy = busy or (lambda: machine_busy(options.busy_load))
        self._battery = battery
        self._ticks: deque[tuple[float, float]] = deque(maxlen=options.cpu_window)  # (cpu s, wall s) per tick
        self.level = 0

    def record(self, cpu_seconds: float, wall_seconds: float) -> None:
        """One tick's CPU time (this process) and wall time, sleep included."""
        self._ticks.append((cpu_seconds, wall_seconds))

    def cpu_share(self) -> float:
        """Share of one core used over the recorded ticks."""
        wall = sum(w for _, w in self._ticks)
        return sum(c for c, _ in self._ticks) / wall if wall > 0 else 0.0

    def interval(self) -> float:
        """The next wait: the level goes up while over budget or busy, down (one step a tick) otherwise."""
        base = max(MIN_INTERVAL, self.options.interval)
        if self.cpu_share() > self.options.cpu_budget or self._busy():
            self.level += 1
        elif self.level:
            self.level -= 1
        wait = base * 2 ** self.level
        if wait > self.options.max_interval:  # keep the level where it reaches the cap, so recovery is quick
            self.level -= 1
            wait = max(base, self.options.max_interval)
        return wait * self.options.battery_factor if self._battery() else wait


class Watcher:
    """Looks at the screen every interval and logs what changed (redacted); `pause` stops it at once."""

    def __init__(self, log: ScreenLog, options: WatchOptions | None = None, policy: PrivacyPolicy | None = None,
                 display: str | None = None, ocr: ScreenOCR | None = None, backoff: Backoff | None = None) -> None:
        self.options = options or WatchOptions()
        self.policy = policy or PrivacyPolicy()
        self.log = log
        name = display or check_x11_session()
        self._capture = ScreenCapture(self.policy, name)
        self._x = connect(name)
        self._ocr = ocr or ScreenOCR(threads=1)  # one core: watch mode must not take the machine
        self._detector = ChangeDetector()
        self.backoff = backoff or Backoff(self.options)
        self._running = threading.Event()
        self._running.set()
        self.ocr_calls = 0

    @classmethod
    def from_settings(cls, settings: ScreenSettings, display: str | None = None) -> Watcher:
        """Watch mode as the `screen.watch_*` settings say, its log created owner-only; the display is
        checked first, so a machine without one gets the reason and no file."""
        display = display or check_x11_session()
        log = ScreenLog.create(default_path(settings.watch_db),
                               Retention(settings.watch_retention_days, settings.watch_max_rows))
        try:
            return cls(log, WatchOptions(interval=settings.watch_interval, cpu_budget=settings.watch_cpu_budget),
                       PrivacyPolicy.from_settings(settings), display)
        except BaseException:
            log.close()
            raise

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._capture.close()
        self._x.close()
        self.log.close()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self) -> None:
        """Stop capturing now: the tick under way stores nothing, no tick runs until `resume`."""
        self._running.clear()

    def resume(self) -> None:
        """Capture again; the next frame counts as a change (the screen may have changed meanwhile)."""
        self._detector.reset()
        self._running.set()

    def step(self) -> Stored | None:
        """One look: grab, and if the screen changed, OCR, redact and store. None when nothing was stored."""
        if self.paused:
            return None
        frame = self._capture.grab()
        if not self._detector.check(frame.pixels).changed or self.paused:
            return None
        title = self._title()
        self.ocr_calls += 1
        text = redact(self._ocr.read(frame.pixels).as_text()).text
        del frame  # the unredacted pixels go before anything is written
        if self.paused or not text.strip():
            return None
        now = time.time()
        return Stored(now, title, text, self.log.add(now, title, text))

    def run(self, stop: threading.Event, on_store: Callable[[Stored], None] | None = None) -> None:
        """Tick until `stop` is set, waiting the back-off's interval between looks (and while paused)."""
        swept = time.monotonic()
        while not stop.is_set():
            started, cpu = time.monotonic(), time.process_time()
            if started - swept >= EXPIRE_EVERY:  # a static screen for days still lets old rows go
                self.log.expire(time.time())
                swept = started
            if self.paused:
                stop.wait(0.1)  # wakes quickly on resume or stop; nothing is captured meanwhile
                continue
            stored = self.step()
            if stored is not None and on_store is not None:
                on_store(stored)
            stop.wait(max(0.0, self.backoff.interval() - (time.monotonic() - started)))
            self.backoff.record(time.process_time() - cpu, time.monotonic() - started)

    def _title(self) -> str:
        """The active window's title, or "" when it is private or there is none (never a private title)."""
        try:
            window = active_window(self._x)
        except EdgeAIError:
            return ""
        return "" if self.policy.is_private(window) else window.title

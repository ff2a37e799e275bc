"""Screen capture, change detection and OCR on a private Xvfb (1280x800), printing JSON.

    python benchmarks/bench_screen.py [--frames 100] [--ocr-runs 2] [--watch-seconds 15] [--watch-only]

- watch: watch mode (runtime.screen.watch, its default options) on a static screen and on a screen
  whose clock line changes every second, each for --watch-seconds after a first stored frame: CPU %
  of one core (this process, all threads), changes stored, the back-off level reached (interval = base x 2 ** level), and
  peak RSS. Targets: < 1 % on the static screen, peak RSS < 300 MB. It runs first, so the peak RSS
  is watch mode's own (the full-screen OCR after it uses more threads and memory).

- idle: capture (privacy mask included) + change check of an unchanged screen holding a terminal,
  per frame (p50, p90 ms) and split into grab and check. The issue's target: <= 5 ms.
- ocr: OCR of a screen full of terminal text (ms per run after a warm-up run, lines, words).
- accuracy: OCR word accuracy (1 - WER) on terminal text in an xterm and on document-like text (a
  page rendered in a serif font, shown in a window). Target: >= 0.95 each.

Needs Xvfb and xterm (apt-get install -y xvfb x11-apps xterm fonts-dejavu-core). Runs ~1 minute.

Measured 2026-12-02 on 2 cores shared with other jobs (load average 5-8): idle capture + check p50
3.6 ms at the quietest run (grab 2.7, check 0.7), 8.7-12.7 ms while loaded: the 5 ms target is met
only on a quiet machine; OCR of the full terminal screen 14-24 s (loaded; rapidocr det + rec on
onnxruntime); word accuracy terminal 0.989 (one "Mounted on" read as "Mounted_on"), document 1.0.
With rapidocr's angle classifier on, terminal accuracy was 0.931 (a line flipped and misread).
Watch mode (--watch-only --watch-seconds 15, load 1.1 per core): static screen at 1 frame a second
0.53 % of one core (target < 1); clock changing every second 27-31 % (4 changes OCR'd in 15 s, the
back-off at level 4 = 16 s: over its 5 % CPU budget and the machine busy); peak RSS 580-672 MB, over
the 300 MB target: rapidocr's detector alone peaks at ~510 MB (its input is scaled to >= 736 px on the
short side; onnxruntime's arena is already off), the rest of watch mode is ~80 MB. With the recognizer
fed one line at a time (Rec.rec_batch_num 1: a batch is padded to its widest line) peak RSS fell to
492 MB and the clock case to 8 % CPU (load 1.15 per core); scaling the detector's input down instead
split lines (45 -> 81 at 800 px) and lost words (0.77 accuracy at 640 px).
2026-12-03, OCR read in overlapping bands of 432 rows at their own resolution and glibc told to return
big freed blocks (runtime.screen.ocr): watch peak RSS 538 -> 274 MB (two runs, load 0.2-0.3 per core;
target met), clock case 12-13 % CPU, static 0.5 %; full terminal screen 1.4-1.5 s; word accuracy
terminal 0.989 -> 1.0 ("Mounted on" now read), document 1.0. Same process, alternating, on a 45-line
synthetic terminal screen: bands take 1.13x the time of one scaled pass.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "screen"))

from xserver import DOCUMENT_TEXT, TERMINAL_TEXT, render_page, show_image, start_xvfb, wait_drawn, word_accuracy  # noqa: E402

from runtime.screen.capture import ScreenCapture  # noqa: E402
from runtime.screen.change import ChangeDetector  # noqa: E402
from runtime.screen.ocr import ScreenOCR  # noqa: E402
from runtime.screen.screen_log import Retention, ScreenLog  # noqa: E402
from runtime.screen.watch import Backoff, Watcher, WatchOptions  # noqa: E402


def xterm(display: str, title: str, text: str, geometry: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["xterm", "-display", display, "-title", title, "-geometry", geometry, "-fa",
                             "DejaVu Sans Mono", "-fs", "14", "-bg", "white", "-fg", "black", "+sb", "-e", "sh", "-c",
                             'printf "%s" "$0"; exec sleep 600', text],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_drawn(display, title)
    return proc


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_idle(cap: ScreenCapture, frames: int) -> dict[str, float]:
    detector = ChangeDetector()
    detector.check(cap.grab().pixels)
    total, grab, check = [], [], []
    for _ in range(frames):
        t0 = time.perf_counter()
        frame = cap.grab()
        t1 = time.perf_counter()
        change = detector.check(frame.pixels)
        t2 = time.perf_counter()
        assert not change.changed
        total.append((t2 - t0) * 1000)
        grab.append((t1 - t0) * 1000)
        check.append((t2 - t1) * 1000)
    return {"frames": frames, "p50_ms": round(statistics.median(total), 2), "p90_ms": round(percentile(total, 0.9), 2),
            "grab_p50_ms": round(statistics.median(grab), 2), "check_p50_ms": round(statistics.median(check), 3),
            "target_ms": 5.0}


def watch_cpu(display: str, seconds: float, log_dir: Path, name: str, backoff: Backoff | None = None) -> dict[str, float]:
    """Watch mode for `seconds` after its first stored frame: CPU % of one core, rows stored, back-off level."""
    log = ScreenLog.create(log_dir / f"{name}.sqlite3", Retention())
    with Watcher(log, display=display, backoff=backoff) as watcher:
        watcher.step()  # the first frame: models load, the screen is stored once
        stored: list[object] = []
        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        cpu0, t0 = time.process_time(), time.monotonic()
        timer.start()
        watcher.run(stop, on_store=stored.append)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        return {"seconds": round(wall, 1), "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
                "changes_stored": len(stored), "ocr_calls": watcher.ocr_calls - 1,
                "backoff_level": watcher.backoff.level}  # the interval is the base x 2 ** level


def bench_watch(display: str, seconds: float) -> dict[str, object]:
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        static = xterm(display, "static", TERMINAL_TEXT, "100x20+0+0")
        try:
            # the machine's load would stretch the interval: measured at 1 frame a second, the honest worst case
            steady = Backoff(WatchOptions(), busy=lambda: False, battery=lambda: False)
            report["static"] = dict(watch_cpu(display, seconds, Path(tmp), "static", steady), target_percent=1.0)
        finally:
            static.terminate()
            static.wait()
        clock = subprocess.Popen(["xterm", "-display", display, "-title", "clock", "-geometry", "60x10+0+0", "-fa",
                                  "DejaVu Sans Mono", "-fs", "14", "-bg", "white", "-fg", "black", "+sb", "-e", "sh",
                                  "-c", "while :; do date +%H:%M:%S; sleep 1; done"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_drawn(display, "clock")
            report["changing_every_second"] = watch_cpu(display, seconds, Path(tmp), "changing")
        finally:
            clock.terminate()
            clock.wait()
    report["load_per_core"] = round(os.getloadavg()[0] / (os.cpu_count() or 1), 2)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["target_rss_mb"] = 300
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--ocr-runs", type=int, default=2)
    parser.add_argument("--watch-seconds", type=float, default=15.0)
    parser.add_argument("--watch-only", action="store_true", help="measure watch mode only (~40 s)")
    args = parser.parse_args()
    xvfb, display = start_xvfb(1280, 800)
    os.environ["DISPLAY"] = display
    os.environ.pop("WAYLAND_DISPLAY", None)
    procs: list[subprocess.Popen[bytes]] = []
    report: dict[str, object] = {"screen": "1280x800 Xvfb", "cpus": os.cpu_count()}
    try:
        report["watch"] = bench_watch(display, args.watch_seconds)
        if not args.watch_only:
            ocr = ScreenOCR()
            with ScreenCapture() as cap:
                full = "\n".join([TERMINAL_TEXT] * 2)  # 34 lines of 17 px: the 1280x800 screen full of terminal text
                procs.append(xterm(display, "shell", full, "140x36+0+0"))
                report["idle"] = bench_idle(cap, args.frames)
                pixels = cap.grab().pixels
                ocr.read(pixels)  # warm-up: loads the models
                runs = []
                for _ in range(args.ocr_runs):
                    t0 = time.perf_counter()
                    result = ocr.read(pixels)
                    runs.append((time.perf_counter() - t0) * 1000)
                report["ocr_full_screen"] = {"ms": round(statistics.median(runs), 1), "runs": args.ocr_runs,
                                             "lines": len(result.lines), "words": len(result.text.split())}
                accuracy = {"terminal": round(word_accuracy(full, result.text), 4)}
                for proc in procs:
                    proc.terminate()
                    proc.wait()
                procs.clear()
                page = show_image(display, render_page(DOCUMENT_TEXT), 20, 20, "report - Document Viewer")
                try:
                    accuracy["document"] = round(word_accuracy(DOCUMENT_TEXT, ocr.read(cap.grab().pixels).text), 4)
                finally:
                    page.close()  # type: ignore[attr-defined]
                accuracy["target"] = 0.95
                report["ocr_word_accuracy"] = accuracy
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        xvfb.terminate()
        xvfb.wait()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Screen capture, change detection and OCR on a private Xvfb (1280x800), printing JSON.

    python benchmarks/bench_screen.py [--frames 100] [--ocr-runs 2]

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
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "screen"))

from xserver import DOCUMENT_TEXT, TERMINAL_TEXT, render_page, show_image, start_xvfb, wait_drawn, word_accuracy  # noqa: E402

from runtime.screen.capture import ScreenCapture  # noqa: E402
from runtime.screen.change import ChangeDetector  # noqa: E402
from runtime.screen.ocr import ScreenOCR  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--ocr-runs", type=int, default=2)
    args = parser.parse_args()
    xvfb, display = start_xvfb(1280, 800)
    os.environ["DISPLAY"] = display
    os.environ.pop("WAYLAND_DISPLAY", None)
    procs: list[subprocess.Popen[bytes]] = []
    report: dict[str, object] = {"screen": "1280x800 Xvfb", "cpus": os.cpu_count()}
    try:
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

"""`edge-ai screen capture|ocr|ask|watch|search`: what is on the screen, with private windows blanked first.

Thin: runtime.screen.capture grabs (the privacy mask applied before a frame is returned),
runtime.screen.ocr reads, runtime.screen.redact replaces PII and secrets, and `ask` gives the
screen's redacted text to the default LLM through the same engine-opening path as `edge-ai ask`;
`watch` (opt-in) logs redacted screen changes (runtime.screen.watch) that `search` finds again.
mss, python-xlib and rapidocr are imported only when a command runs, so `edge-ai --help` does not
pay for them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from edge_ai import config as config_mod
from edge_ai.console import err
from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_path

if TYPE_CHECKING:
    import numpy as np

    from runtime.screen.capture import Frame

screen_app = typer.Typer(help="Look at the screen: capture it, read its text, ask about it (private windows blanked).",
                         no_args_is_help=True)

RegionOpt = Annotated[Optional[str], typer.Option("--region", help="capture x,y,w,h (pixels) instead of the screen")]
WindowOpt = Annotated[bool, typer.Option("--window", help="capture the active window")]
MonitorOpt = Annotated[Optional[int], typer.Option("--monitor", help="capture monitor N (from 1)")]


def _grab(cfg: config_mod.Config, region: str | None, window: bool, monitor: int | None) -> Frame:
    from runtime.screen.capture import ScreenCapture, parse_region
    from runtime.screen.privacy import PrivacyPolicy

    area = parse_region(region) if region is not None else None
    with ScreenCapture(PrivacyPolicy.from_settings(cfg.screen)) as cap:
        return cap.grab(region=area, monitor=monitor, window=window)


def _load_image(path: Path) -> np.ndarray:
    """An image file as RGB pixels, or a one-line error."""
    from runtime.screen.image_file import UnreadableImage, read_rgb

    try:
        return read_rgb(path)
    except FileNotFoundError:
        raise EdgeAIError(f"no image file {path}; check the path") from None
    except UnreadableImage as exc:
        raise EdgeAIError(f"cannot read image {path}: {exc}") from None


def capture_cmd(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="PNG file to write "
                                                   "(default: screenshot-<time>.png here)")] = None,
    region: RegionOpt = None, window: WindowOpt = False, monitor: MonitorOpt = None,
    downscale: Annotated[bool, typer.Option("--downscale", help="write the copy a model gets "
                                            "(screen.downscale_width pixels wide)")] = False,
) -> None:
    """Save a screenshot, private windows blanked, as PNG."""
    from PIL import Image

    from runtime.screen.capture import downscale as shrink

    cfg = config_mod.load()
    frame = _grab(cfg, region, window, monitor)
    pixels = shrink(frame.pixels, cfg.screen.downscale_width) if downscale else frame.pixels
    target = (output or Path(time.strftime("screenshot-%Y%m%d-%H%M%S.png"))).expanduser()
    with atomic_path(target) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    height, width = pixels.shape[:2]
    blanked = f", {frame.masked_pixels} private pixels blanked" if frame.masked_pixels else ""
    err.print(f"wrote {target} ({width}x{height}{blanked})")


def ocr_cmd(
    image: Annotated[Optional[Path], typer.Option("--image", help="read this image file instead of the screen")] = None,
    region: RegionOpt = None, window: WindowOpt = False, monitor: MonitorOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="lines with boxes and confidence as JSON")] = False,
    redacted: Annotated[bool, typer.Option("--redact", help="replace PII and secrets, as `screen ask` gives the "
                                           "text to the model")] = False,
) -> None:
    """Print the text on the screen (or in an image file), in reading order."""
    from runtime.screen.ocr import ScreenOCR
    from runtime.screen.redact import redact

    def shown(text: str) -> str:
        return redact(text).text if redacted else text

    if image is not None and (region is not None or window or monitor is not None):
        raise EdgeAIError("--image reads a file; --region, --window and --monitor are for the screen")
    pixels = _load_image(image.expanduser()) if image is not None else _grab(config_mod.load(), region, window,
                                                                            monitor).pixels
    result = ScreenOCR().read(pixels)
    if as_json:
        print(json.dumps([{"text": shown(line.text), "box": [line.box.x, line.box.y, line.box.width, line.box.height],
                           "confidence": round(line.confidence, 4), "block": line.block} for line in result.lines],
                         indent=2))
    elif result.lines:
        print(shown(result.as_text()))
    else:
        err.print("no text found")


def ask_cmd(
    question: Annotated[str, typer.Argument(help="the question about what is on the screen")],
    region: RegionOpt = None, window: WindowOpt = False, monitor: MonitorOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="model name or .gguf path")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", "-t", help="sampling temperature")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", "-n")] = None,
) -> None:
    """Answer a question about the screen: its text (private windows blanked, PII and secrets replaced) goes to
    the model; with screen.vision_mmproj set, its image too."""
    from edge_ai.cli.main import load_config, open_engine, print_reply
    from runtime.llamacpp.mtmd import check_projector
    from runtime.llm.events import SamplingParams
    from runtime.screen.capture import parse_region
    from runtime.screen.context import read_screen, with_screen
    from runtime.screen.ocr import ScreenOCR

    if not question.strip():
        raise EdgeAIError("no question given; say what you want to know about the screen")
    cfg = load_config(**{"model.name": model, "sampling.temperature": temperature, "sampling.seed": seed,
                         "sampling.max_tokens": max_tokens})
    area = parse_region(region) if region is not None else None
    sampling = SamplingParams.from_settings(cfg.sampling)
    vision = bool(cfg.screen.vision_mmproj)
    if vision:  # a wrong path is said before the screen is read
        check_projector(Path(cfg.screen.vision_mmproj).expanduser(), None)
    screen = read_screen(cfg.screen, ScreenOCR(), region=area, window=window, monitor=monitor,
                         image_width=cfg.screen.downscale_width if vision else None)
    engine = open_engine(cfg, vision=vision)
    try:
        budget = min(cfg.screen.ocr_budget_tokens, max(64, engine.n_ctx // 2))
        text = screen.for_model(budget, count_tokens=lambda s: len(engine.tokenize(s, special=False))).text
        messages: list[dict[str, Any]] = ([{"role": "system", "content": cfg.chat.system_prompt}]
                                          if cfg.chat.system_prompt else [])
        # with the image, a screen without text is still something to ask about
        messages.append({"role": "user", "content": with_screen(text, question) if text else question.strip()})
        if vision:
            messages[-1]["image"] = screen.image
        print_reply(engine, messages, sampling)
    finally:
        engine.close()
    sys.stdout.write("\n")


def watch_cmd(
    interval: Annotated[Optional[float], typer.Option("--interval", help="seconds between captures (>= 1; default "
                                                      "screen.watch_interval)")] = None,
    duration: Annotated[Optional[float], typer.Option("--for", help="stop after this many seconds (default: "
                                                      "until Ctrl-C)")] = None,
) -> None:
    """Opt-in watch mode: log what changes on screen (OCR'd, redacted, private windows blanked) for `screen search`."""
    import threading

    from runtime.screen.watch import Stored, Watcher

    cfg = config_mod.load({"screen.watch_interval": interval} if interval is not None else None)
    if duration is not None and duration <= 0:
        raise EdgeAIError(f"--for {duration} must be a positive number of seconds")
    stop = threading.Event()

    def show(stored: Stored) -> None:
        title = stored.title or "(no title)"
        err.print(f"{time.strftime('%H:%M:%S', time.localtime(stored.time))}  {title}  "
                  f"{len(stored.text.split())} words stored", soft_wrap=True)

    with Watcher.from_settings(cfg.screen) as watcher:
        err.print(f"watching the screen every {watcher.options.interval:g} s into {watcher.log.path}; Ctrl-C stops",
                  soft_wrap=True)
        timer = threading.Timer(duration, stop.set) if duration is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            watcher.run(stop, on_store=show)
        except KeyboardInterrupt:
            stop.set()
            err.print("[stopped]")
        finally:
            if timer is not None:
                timer.cancel()


def search_cmd(
    query: Annotated[str, typer.Argument(help="words to find (FTS5 syntax: \"a phrase\", prefix*, OR, NOT)")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="most results")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="results as JSON")] = False,
) -> None:
    """Search the screen log that `screen watch` keeps: when you saw it, in which window, and the words around it."""
    from runtime.screen.screen_log import ScreenLog, default_path

    with ScreenLog.open(default_path(config_mod.load().screen.watch_db)) as log:
        hits = log.search(query, limit)
    if as_json:
        print(json.dumps([{"time": h.time, "title": h.title, "snippet": h.snippet} for h in hits], indent=2))
        return
    if not hits:
        err.print(f"nothing found for {query!r}")
        return
    for hit in hits:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hit.time))
        print(f"{when}  {hit.title or '(no title)'}\n    {' '.join(hit.snippet.split())}")


screen_app.command("capture")(capture_cmd)
screen_app.command("ocr")(ocr_cmd)
screen_app.command("ask")(ask_cmd)
screen_app.command("watch")(watch_cmd)
screen_app.command("search")(search_cmd)


def register(app: typer.Typer) -> None:
    """Add `screen` to the main `edge-ai` app."""
    app.add_typer(screen_app, name="screen")

"""`edge-ai screen capture|ocr|ask` through a subprocess, on Xvfb with real xterm windows and the real model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from xserver import DOCUMENT_TEXT, render_page, word_accuracy, words

from runtime.screen.windows import list_windows, open_display


def edge_ai(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


def test_capture_writes_a_png_with_the_private_window_blanked(display, xterm, tmp_path: Path):
    xterm("Incognito - Chromium", "private tab " * 20, geometry="50x8+10+10")
    xterm("notes", "shopping list", geometry="30x3+500+300")
    with open_display() as x:
        private = next(w.rect for w in list_windows(x) if w.title.startswith("Incognito"))
    out = tmp_path / "shots" / "screen.png"
    result = edge_ai("screen", "capture", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "private pixels blanked" in result.stderr
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (800, 1280, 3)
    assert pixels[private.y:private.y + private.height, private.x:private.x + private.width].max() == 0
    assert pixels[300:320, 500:600].max() == 255  # the notes window
    assert [p.name for p in out.parent.iterdir()] == ["screen.png"]  # no temp file left


def test_capture_of_a_region_and_its_bad_input(display, tmp_path: Path):
    out = tmp_path / "region.png"
    assert edge_ai("screen", "capture", "-o", str(out), "--region", "10,20,300,200").returncode == 0
    assert Image.open(out).size == (300, 200)
    env = dict(os.environ, EDGE_AI_SCREEN_DOWNSCALE_WIDTH="640")
    assert edge_ai("screen", "capture", "-o", str(out), "--downscale", env=env).returncode == 0
    assert Image.open(out).size == (640, 400)
    for args, message in [(("--region", "1200,700,200,200"), "not inside the screen"),
                          (("--region", "1,2,3"), "x,y,w,h"),
                          (("--monitor", "3"), "no monitor 3"),
                          (("--window", "--monitor", "1"), "choose one of")]:
        bad = tmp_path / "bad.png"
        result = edge_ai("screen", "capture", "-o", str(bad), *args)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
        assert not bad.exists()


def test_ocr_prints_the_screen_text(display, xterm):
    xterm("shell", "make: *** No rule to make target 'install'. Stop.", geometry="70x3+0+0")
    result = edge_ai("screen", "ocr")
    assert result.returncode == 0, result.stderr
    assert word_accuracy("make: *** No rule to make target 'install'. Stop.", result.stdout) >= 0.8, result.stdout


def test_ocr_redact_prints_what_the_model_would_receive(display, xterm):
    xterm("mail", "Reply to ana.lopez@example.com, card 4111 1111 1111 1111", geometry="70x3+0+0")
    plain = edge_ai("screen", "ocr")
    assert plain.returncode == 0 and "ana.lopez@example.com" in plain.stdout, plain.stdout
    result = edge_ai("screen", "ocr", "--redact")
    assert result.returncode == 0, result.stderr
    assert "[email]" in result.stdout and "[card]" in result.stdout, result.stdout
    assert "example.com" not in result.stdout and "1111" not in result.stdout


def test_ocr_of_an_image_file_and_of_a_file_that_is_not_an_image(tmp_path: Path):
    page = tmp_path / "page.png"
    Image.fromarray(render_page(DOCUMENT_TEXT)).save(page)
    result = edge_ai("screen", "ocr", "--image", str(page), "--json")
    assert result.returncode == 0, result.stderr
    import json

    lines = json.loads(result.stdout)
    assert word_accuracy(DOCUMENT_TEXT, "\n".join(line["text"] for line in lines)) >= 0.95
    assert all(len(line["box"]) == 4 and 0 < line["confidence"] <= 1 for line in lines)
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    for path, message in [(text_file, "cannot read image"), (tmp_path / "missing.png", "no image file")]:
        result = edge_ai("screen", "ocr", "--image", str(path))
        assert result.returncode != 0 and message in result.stderr, result.stderr


@pytest.mark.parametrize("env_change, message", [
    ({"DISPLAY": None}, "DISPLAY is not set"),
    ({"WAYLAND_DISPLAY": "wayland-0"}, "Wayland session"),
    ({"DISPLAY": ":999"}, "cannot open X display"),
])
def test_no_display_and_wayland_fail_with_one_line(display, env_change, message, tmp_path: Path):
    env = dict(os.environ)
    for name, value in env_change.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    out = tmp_path / "x.png"
    for args in (("screen", "capture", "-o", str(out)), ("screen", "ocr"), ("screen", "ask", "what is this?")):
        result = edge_ai(*args, env=env)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    assert not out.exists()


def test_the_cli_imports_no_screen_library_until_a_screen_command_runs():
    code = ("import sys, edge_ai.cli.main; heavy = {'mss', 'rapidocr', 'Xlib', 'cv2', 'PIL'} & set(sys.modules); "
            "print(sorted(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.slow
def test_ask_answers_from_the_screen_with_the_real_default_model(display, xterm, registered_model):
    xterm("notes", "The secret fruit is pineapple.", geometry="40x3+0+0")
    xterm("Bitwarden", "The vault fruit is kumquat.", geometry="40x3+0+200")
    result = edge_ai("screen", "ask", "What is the secret fruit?", "--temperature", "0", "--max-tokens", "32")
    assert result.returncode == 0, result.stderr
    assert "pineapple" in words(result.stdout), result.stdout
    assert "kumquat" not in result.stdout.lower()

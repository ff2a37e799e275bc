"""A real X server (Xvfb) for the screen tests, and real xterm windows showing known text on it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tiny_mmproj import write_tiny_mmproj
from xserver import SCREEN_SIZE, Term, start_xvfb, wait_drawn


@pytest.fixture(scope="session")
def mmproj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random vision projector for the default model (tiny_mmproj)."""
    return write_tiny_mmproj(tmp_path_factory.mktemp("vision") / "tiny-mmproj.gguf")


@pytest.fixture(scope="session")
def xvfb() -> Iterator[str]:
    """The display name of a 1280x800 Xvfb started for this session (killed after it)."""
    if shutil.which("Xvfb") is None or shutil.which("xterm") is None:
        pytest.skip("Xvfb and xterm are needed for the screen tests: apt-get install -y xvfb x11-apps xterm")
    proc, display = start_xvfb(*SCREEN_SIZE)
    yield display
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def display(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """DISPLAY set to the test X server, no Wayland variables from outside."""
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    return xvfb


@pytest.fixture
def xterm(display: str) -> Iterator[Callable[..., Term]]:
    """Start xterms showing text: xterm(title, text, geometry="80x10+0+0"); all closed after the test."""
    started: list[Term] = []

    def start(title: str, text: str, geometry: str = "80x10+0+0", font_size: int = 14) -> Term:
        script = 'printf "%s" "$0"; exec sleep 600'
        proc = subprocess.Popen(["xterm", "-display", display, "-title", title, "-geometry", geometry,
                                 "-fa", "DejaVu Sans Mono", "-fs", str(font_size), "-bg", "white", "-fg", "black",
                                 "+sb", "-e", "sh", "-c", script, text],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        term = Term(proc, title)
        started.append(term)
        wait_drawn(display, title)
        return term

    yield start
    for term in started:
        term.proc.terminate()
    for term in started:
        term.proc.wait(timeout=10)

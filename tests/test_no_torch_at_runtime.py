"""The runtime must start and chat without torch (it lives in the `convert` extra only), and start light."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = """
import sys
from edge_ai.cli import main
from tui import app
from runtime import server
from runtime.llm.engine import Engine
from runtime.llm.events import SamplingParams
engine = Engine(sys.argv[1])
list(engine.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=2)))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum", "torchaudio"))
print(",".join(heavy))
"""


@pytest.mark.slow
def test_cli_tui_server_and_a_chat_never_import_torch(model_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", CHECK, str(model_path)], capture_output=True, text=True,
                            timeout=300, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"heavy modules imported at run time: {result.stdout}"


FIRST_FRAME = """
import sys
from edge_ai.cli import main
from tui import app
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("llama_cpp", "gguf", "numpy", "torch"))))
"""


def test_what_the_app_imports_before_its_first_frame_is_light() -> None:
    """llama.cpp, gguf and numpy (~0.8 s together on 2 cores) load in the model worker, after the
    first frame; importing them at the top of a module on the start-up path would delay it."""
    result = subprocess.run([sys.executable, "-c", FIRST_FRAME], capture_output=True, text=True, timeout=120,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported before the first frame: {result.stdout}"

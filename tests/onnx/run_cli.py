"""Run `edge-ai` as a user does, in a subprocess (for tests of the command line)."""

from __future__ import annotations

import os
import subprocess
import sys


def edge_ai(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env=os.environ.copy())

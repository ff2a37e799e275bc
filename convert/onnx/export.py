"""Export a Hugging Face checkpoint to ONNX with optimum-onnx, after checking it can be exported.

    task = resolve_task(Path("all-MiniLM-L6-v2"), "auto")        # "feature-extraction"
    files = export(Path("all-MiniLM-L6-v2"), Path("work/fp32"), task)

optimum's own failures for a folder that is not a model, an architecture it does not know or a
task the model cannot do are tracebacks (KeyError, ValueError, OSError deep in transformers), so
the source is checked first against optimum's task table and every such case becomes one
`EdgeAIError` line naming what is supported.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

from edge_ai.errors import EdgeAIError

log = logging.getLogger(__name__)

# The tasks this toolchain can export *and verify* (each has a parity probe in convert/onnx/probes.py),
# mapped to optimum's task name. LLMs and Whisper are always exported with their KV cache.
TASKS: dict[str, str] = {
    "feature-extraction": "feature-extraction",
    "text-generation-with-past": "text-generation-with-past",
    "automatic-speech-recognition": "automatic-speech-recognition-with-past",
}


def read_config(src: Path) -> dict[str, Any]:
    """config.json of a model folder, or an error saying why `src` is not one."""
    if not src.is_dir():
        raise EdgeAIError(f"{src} is not a folder; pass a Hugging Face model folder (config.json + weights)")
    try:
        config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgeAIError(f"{src} has no config.json, so it is not a Hugging Face model folder; pass the "
                          "folder that holds config.json and the weights") from None
    except (ValueError, OSError) as exc:
        raise EdgeAIError(f"{src / 'config.json'} cannot be read ({exc}); fix or re-download it") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise EdgeAIError(f"{src / 'config.json'} names no model_type; it is not a transformers model config")
    if not any(src.glob("*.safetensors")) and not any(src.glob("*.bin")):
        raise EdgeAIError(f"{src} has no weights (*.safetensors or *.bin); copy them next to config.json")
    return config


def _supported_tasks(model_type: str) -> list[str]:
    """optimum's export tasks for `model_type`, or an error naming the architectures it supports."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX configs)
    from optimum.exporters.tasks import TasksManager

    known = TasksManager._LIBRARY_TO_SUPPORTED_MODEL_TYPES["transformers"]
    onnx_types = sorted(name for name, exporters in known.items() if "onnx" in exporters)
    if model_type.replace("_", "-") not in onnx_types and model_type not in onnx_types:
        shown = ", ".join(onnx_types[:40])
        raise EdgeAIError(f"optimum-onnx cannot export model_type '{model_type}'; it supports {len(onnx_types)} "
                          f"architectures ({shown}, ...); use `edge-ai convert gguf` for llama.cpp instead")
    return list(TasksManager.get_supported_tasks_for_model_type(model_type, "onnx", library_name="transformers"))


def resolve_task(src: Path, task: str) -> str:
    """Our task name for exporting `src` (`task` may be "auto"), checked against what the model can do."""
    config = read_config(src)
    model_type = config["model_type"]
    supported = _supported_tasks(model_type)
    if task == "auto":
        architectures = config.get("architectures") or []
        inferred = _infer_from_architecture(architectures[0] if architectures else "", supported)
        if inferred is None:
            raise EdgeAIError(f"cannot tell which task to export {src} for (model_type '{model_type}', "
                              f"architectures {architectures}); pass --task ({', '.join(TASKS)})")
        return inferred
    if task not in TASKS:
        raise EdgeAIError(f"unknown task '{task}'; choose one of: auto, {', '.join(TASKS)}")
    if TASKS[task] not in supported:
        ours = [name for name, theirs in TASKS.items() if theirs in supported]
        raise EdgeAIError(f"a '{model_type}' model cannot be exported for {task}; it can do: "
                          f"{', '.join(ours) or 'none of the tasks edge-ai verifies'}")
    return task


def _infer_from_architecture(architecture: str, supported: list[str]) -> str | None:
    """The task an architecture class name implies (WhisperForConditionalGeneration -> ASR...)."""
    if architecture.endswith("ForCausalLM") and "text-generation-with-past" in supported:
        return "text-generation-with-past"
    if architecture.endswith("ForConditionalGeneration") and "automatic-speech-recognition-with-past" in supported:
        return "automatic-speech-recognition"
    if "feature-extraction" in supported and not architecture.endswith(("ForCausalLM", "ForConditionalGeneration")):
        return "feature-extraction"
    return None


def export(src: Path, dest: Path, task: str) -> list[Path]:
    """Export `src` to ONNX files in `dest` (created) for our `task`; returns the .onnx files.

    optimum's own validation is skipped: our probes compare against PyTorch on real inputs and
    report the numbers instead of a pass/fail at an arbitrary tolerance."""
    from optimum.exporters.onnx import main_export

    dest.mkdir(parents=True, exist_ok=True)
    chatter = io.StringIO()  # optimum prints notes and the tracer warns; keep them out of the CLI output
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main_export(str(src), dest, task=TASKS[task], local_files_only=True, do_validation=False,
                        library_name="transformers")
    except (KeyError, ValueError, OSError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeAIError(f"optimum could not export {src} for {task}: {first}") from exc
    log.debug("optimum export output: %s", chatter.getvalue())
    # optimum also writes both decoders again as one graph with an If on the cache; the runtime uses
    # the plain pair (prompt decoder, one-token decoder with past), so the third copy is dropped.
    (dest / "decoder_model_merged.onnx").unlink(missing_ok=True)
    return onnx_files(dest)


def onnx_files(folder: Path) -> list[Path]:
    """The .onnx graphs of an exported model folder, sorted by name."""
    return sorted(folder.glob("*.onnx"))

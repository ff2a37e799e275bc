"""Open ONNX graphs with onnxruntime on the CPU, with one-line errors for missing or corrupt files.

    session = open_session(Path("model.onnx"), threads=2)
    feeds = zero_past_feeds(session)          # empty KV-cache inputs for a first decoder step

onnxruntime reports a truncated or non-ONNX file as a long `InvalidProtobuf`/`Fail` message with
C++ source locations; users get the file name and what to do instead. onnxruntime is imported
here, not at the top of the modules that use it, so importing the runtime stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_ai.errors import EdgeAIError
from edge_ai.hardware import default_threads


def open_session(path: Path, threads: int = 0) -> Any:
    """An onnxruntime CPU `InferenceSession` for `path` (threads 0 = physical cores)."""
    import onnxruntime as ort

    if not path.is_file():
        raise EdgeAIError(f"{path} does not exist; export the model with `edge-ai convert onnx`")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: onnxruntime warns about unused initializers on every load
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgeAIError(f"{path} is not a usable ONNX model ({reason}); re-export it with "
                          "`edge-ai convert onnx`") from None


def _dim(value: Any, name: str) -> int:
    """A concrete size for one dimension of an input of a first step: batch 1, no past, else as declared."""
    if isinstance(value, int):
        return value
    if "batch" in str(value):
        return 1
    if "past" in str(value) or "sequence" in str(value):
        return 0
    raise EdgeAIError(f"cannot size dimension '{value}' of input {name}; the ONNX model has an unexpected layout")


def zero_past_feeds(session: Any, prefix: str = "past_key_values.") -> dict[str, np.ndarray]:
    """Empty (length-0) float32 KV-cache inputs for every `past_key_values.*` input of `session`."""
    return {i.name: np.zeros([_dim(d, i.name) for d in i.shape], dtype=np.float32)
            for i in session.get_inputs() if i.name.startswith(prefix)}

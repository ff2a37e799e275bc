"""The student: the teacher with fewer decoder blocks, initialised from a subset of its layers.

DistilBERT's recipe (keep every other layer) and Minitron's depth pruning both start the student
from the teacher's own weights, which keeps the tokenizer, embeddings and head identical and puts
the student far closer to the teacher than random init. Uniform spacing keeps the first and last
block, whose roles (reading embeddings, writing logits) no middle block can take over.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from edge_ai.errors import EdgeAIError


def uniform_layers(n_teacher: int, n_student: int) -> list[int]:
    """`n_student` teacher layer indices spread evenly from the first to the last."""
    if not 1 <= n_student <= n_teacher:
        raise EdgeAIError(f"--student-layers {n_student} is out of range: the teacher has {n_teacher} layers; "
                          f"pick 1..{n_teacher}")
    if n_student == 1:
        return [0]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def parse_keep_layers(spec: str, n_teacher: int) -> list[int]:
    """`--keep-layers 0,2,4`: distinct, increasing indices of existing teacher layers."""
    try:
        keep = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise EdgeAIError(f"--keep-layers {spec!r} is not a comma-separated list of layer numbers") from None
    bad = [i for i in keep if not 0 <= i < n_teacher]
    if bad:
        raise EdgeAIError(f"--keep-layers {spec}: layer(s) {', '.join(map(str, bad))} out of range, the teacher "
                          f"has layers 0..{n_teacher - 1}")
    if not keep or keep != sorted(set(keep)):
        raise EdgeAIError(f"--keep-layers {spec}: give distinct layer numbers in increasing order")
    return keep


def _decoder(model: Any) -> Any:
    """The decoder stack (`model.model` in transformers' causal LMs, whatever their base_model_prefix)."""
    get = getattr(model, "get_decoder", None)
    return get() if callable(get) else None


def decoder_layers(model: Any) -> Any:
    """The model's list of decoder blocks (`model.model.layers` in transformers' decoder-only models)."""
    layers = getattr(_decoder(model), "layers", None)
    if layers is None:
        raise EdgeAIError(f"cannot pick layers of a {model.config.model_type} model: no decoder layer list; "
                          "pass an existing smaller student checkpoint instead")
    return layers


def build_student(teacher: Any, keep: Sequence[int]) -> Any:
    """A copy of `teacher` holding only the blocks `keep` (in order), config updated to match."""
    import torch

    student = copy.deepcopy(teacher)
    layers = decoder_layers(student)
    kept = torch.nn.ModuleList(layers[i] for i in keep)
    for new_index, layer in enumerate(kept):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index  # the KV cache is indexed by position in the new stack
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_index
    _decoder(student).layers = kept
    config = student.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):  # per-layer attention kinds (Gemma 3 sliding/full) follow their layer
        config.layer_types = [config.layer_types[i] for i in keep]
    return student

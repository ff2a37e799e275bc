"""Which bytes of a mapped GGUF must stay in RAM when a model bigger than RAM runs from mmap.

Every token reads the always-used weights (attention, norms, router, shared experts, the output
head) whole, and only a few routed experts; under memory pressure the kernel evicts the pages it saw
least recently, which can be the always-used ones, and then every token waits on the disk. Locking
the always-used weights (and the hot experts of a profile) leaves only the cold experts to page.
Pure header arithmetic: the file ranges to lock; runtime.llamacpp.residency locks them in the mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edge_ai.buffers import REPACKED_TYPES, repacked_bytes
from edge_ai.gguf_file import GGUFInfo, TensorInfo
from edge_ai.tensor_roles import Role, layer_of, role_of, weights


def _repacked(tensor: TensorInfo, repacking: bool) -> bool:
    """ggml-cpu copies these into its own buffer at load: their mapped pages are never read again."""
    return (repacking and tensor.ggml_type in REPACKED_TYPES and len(tensor.shape) == 2 and tensor.shape[1] % 8 == 0
            and not tensor.name.startswith("token_embd."))


def resident_ranges(info: GGUFInfo, hot_experts: Mapping[int, Sequence[int]] | None = None,
                    cpu_flags: set[str] | None = None) -> list[tuple[int, int]]:
    """(file offset, length) of every always-used tensor and of each hot expert's slab, merged and sorted.

    The token embedding is left out: a token reads one row of it, not the whole table. Each routed-expert
    tensor stacks its experts along the outermost dimension, so expert e of a layer is the e-th equal
    slab of each of that layer's expert tensors."""
    n_expert = weights(info).n_expert
    repacking = repacked_bytes(info, cpu_flags) > 0
    hot = hot_experts or {}
    ranges: list[tuple[int, int]] = []
    for tensor in info.tensors:
        role = role_of(tensor.name)
        if role is Role.EMBEDDINGS or _repacked(tensor, repacking):
            continue
        if role is not Role.EXPERTS:
            ranges.append((tensor.offset, tensor.nbytes))
            continue
        slab = tensor.nbytes // max(1, n_expert)
        ranges += [(tensor.offset + e * slab, slab) for e in hot.get(layer_of(tensor.name) or 0, ())]
    return _merged(ranges)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, length in sorted(ranges):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last_start, last_length = merged[-1]
            merged[-1] = (last_start, max(last_length, start + length - last_start))
        else:
            merged.append((start, length))
    return merged

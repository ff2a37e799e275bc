"""Shrink a mixture-of-experts GGUF by dropping the experts its router picks least, per layer.

Every expert layer keeps the same number of experts (llama.cpp has one expert_count for the whole
model), chosen from an expert profile (`edge-ai moe profile`): the busiest of each layer, kept in
their original order. Each routed-expert tensor stacks its experts along the outermost dimension,
and so do the router's rows (ffn_gate_inp) and its per-expert bias (exp_probs_b): dropping an expert
is dropping the same slab of each, quantized or not, with no requantization. The metadata's
expert_count becomes the kept count; everything else is copied as it is. Written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys

from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_path, check_free_space
from edge_ai.gguf_file import GGUFInfo
from edge_ai.tensor_roles import Role, layer_of, role_of, weights
from runtime.planner.profile import ExpertProfile, require_moe


@dataclass(frozen=True)
class PruneReport:
    """What a prune kept: per layer the expert ids (of the source model) and the profiled picks they served."""

    source: Path
    output: Path
    n_expert: int
    n_kept: int
    kept: dict[int, list[int]]
    routing_share: float  # fraction of the profile's router picks that went to kept experts
    bytes_before: int
    bytes_after: int


def kept_count(n_expert: int, n_expert_used: int, keep: float) -> int:
    """Experts left per layer for a `keep` fraction: rounded, at least the experts a token uses, fewer than all."""
    if not 0 < keep < 1:
        raise EdgeAIError(f"--keep {keep} must be a fraction between 0 and 1 (0.75 keeps three experts in four)")
    n = round(n_expert * keep)
    if n < n_expert_used:
        raise EdgeAIError(f"--keep {keep} leaves {n} of {n_expert} experts but every token uses {n_expert_used}; "
                          f"keep at least {n_expert_used / n_expert:.2f}")
    if n >= n_expert:
        raise EdgeAIError(f"--keep {keep} of {n_expert} experts rounds to all of them; give a smaller fraction")
    return n


def prune_experts(info: GGUFInfo, profile: ExpertProfile, keep: float, output: Path) -> PruneReport:
    """Write `output`: `info`'s model with the `keep` fraction of its experts, the most picked in `profile`."""
    require_moe(info)
    w = weights(info)
    if sorted(profile.counts) != w.expert_layers or profile.n_expert != w.n_expert:
        raise EdgeAIError(f"the expert profile was made for {profile.model} ({profile.n_expert} experts in "
                          f"{len(profile.counts)} layers), not {info.path.name}; profile it with `edge-ai moe profile`")
    arch = info.architecture or ""
    if (info.metadata.get(Keys.LLM.EXPERT_GROUP_COUNT.format(arch=arch)) or 0) > 1:
        raise EdgeAIError(f"{info.path.name} routes within groups of experts (expert_group_count); pruning would "
                          "break the groups: this model cannot be pruned here")
    n_kept = kept_count(w.n_expert, w.n_expert_used, keep)
    kept = {il: sorted(profile.hot_experts(il, n_kept)) for il in w.expert_layers}
    if Path(output).resolve() == Path(info.path).resolve():
        raise EdgeAIError(f"-o {output} is the model itself; write the pruned copy to another file")
    dropped = sum(w.per_layer[il][Role.EXPERTS] for il in w.expert_layers) * (w.n_expert - n_kept) // w.n_expert
    check_free_space(output, info.file_size - dropped)
    _write(GGUFReader(info.path), arch, kept, w.n_expert, n_kept, Path(output))
    served = sum(profile.routing_share(il, es) * sum(profile.counts[il]) for il, es in kept.items())
    return PruneReport(source=Path(info.path), output=Path(output), n_expert=w.n_expert, n_kept=n_kept, kept=kept,
                       routing_share=served / max(1, sum(sum(row) for row in profile.counts.values())),
                       bytes_before=info.file_size, bytes_after=Path(output).stat().st_size)


def _sliced(name: str, data: np.ndarray, kept: dict[int, list[int]], n_expert: int) -> np.ndarray:
    """`data` with only the kept experts when `name` is stacked per expert (experts, router rows, router bias)."""
    il = layer_of(name)
    if il not in kept or role_of(name) not in (Role.EXPERTS, Role.ROUTER):
        return data
    if data.shape[0] != n_expert:
        raise EdgeAIError(f"{name} has shape {tuple(reversed(data.shape))}, not one slab per expert ({n_expert}); "
                          "this model's expert layout is not supported by moe prune")
    return np.ascontiguousarray(data[kept[il]])


def _write(reader: GGUFReader, arch: str, kept: dict[int, list[int]], n_expert: int, n_kept: int, output: Path) -> None:
    count_key = Keys.LLM.EXPERT_COUNT.format(arch=arch)
    with atomic_path(output) as tmp:
        writer = GGUFWriter(tmp, arch, endianess=reader.endianess)
        for field in reader.fields.values():
            if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue  # written by GGUFWriter itself
            vtype = field.types[0]
            sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            value = n_kept if field.name == count_key else field.contents()
            writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
        tensors = [(t, _sliced(t.name, t.data, kept, n_expert)) for t in reader.tensors]
        for tensor, data in tensors:
            writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, data in tensors:
            writer.write_tensor_data(data, tensor_endianess=reader.endianess)
        writer.close()

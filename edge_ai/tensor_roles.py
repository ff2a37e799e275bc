"""Tensor roles: which GGUF tensors are always used, which are experts only some tokens use.

A mixture-of-experts model reads all of its attention, norms, router and shared experts for every
token but only `expert_used_count` of `expert_count` routed experts; placing the routed experts in
slow memory costs little, placing anything else there costs a lot. The role comes from llama.cpp's
tensor names (gguf-py's MODEL_TENSOR names): data, not per-architecture code.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from enum import Enum

from gguf.constants import Keys

from edge_ai.gguf_file import GGUFInfo, TensorInfo


class Role(str, Enum):
    """What a tensor does, in the order the plan's table lists them."""

    EMBEDDINGS = "embeddings"  # token (and per-layer) embeddings: one row read per token
    OUTPUT = "output"  # the LM head: read whole for every token
    ATTENTION = "attention"  # attention / recurrent mixer weights
    DENSE_FFN = "dense_ffn"
    EXPERTS = "experts"  # routed experts: expert_used_count of expert_count read per token
    SHARED_EXPERTS = "shared_experts"
    ROUTER = "router"  # expert gate and its bias
    NORMS = "norms"
    OTHER = "other"


# First match wins, so the narrower expert/router names come before the general ffn_ ones.
_RULES: tuple[tuple[re.Pattern[str], Role], ...] = tuple((re.compile(p), r) for p, r in (
    (r"_exps\.", Role.EXPERTS),
    (r"_(shexp|chexps)\.", Role.SHARED_EXPERTS),
    (r"ffn_gate_inp\.|exp_probs_b", Role.ROUTER),
    (r"norm", Role.NORMS),
    (r"^(token_embd|per_layer_token_embd|token_types|pos_embd)\.", Role.EMBEDDINGS),
    (r"^output\.", Role.OUTPUT),
    (r"\.(attn_|ssm_|shortconv|time_mix_|wkv)", Role.ATTENTION),
    (r"\.ffn_", Role.DENSE_FFN),
))
_LAYER = re.compile(r"^blk\.(\d+)\.")


def role_of(name: str) -> Role:
    """The role of the tensor called `name` (Role.OTHER when no rule knows it)."""
    return next((role for pattern, role in _RULES if pattern.search(name)), Role.OTHER)


def layer_of(name: str) -> int | None:
    """The block index of a per-layer tensor (`blk.N.`), None for the model's input/output tensors."""
    match = _LAYER.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Weights:
    """A model's tensor bytes by role, overall and per layer, and its expert layout."""

    by_role: dict[Role, int]
    per_layer: list[dict[Role, int]]  # index = block; roles absent from a layer are absent here
    n_expert: int
    n_expert_used: int
    tied_output: bool  # no output.weight: the LM head reads token_embd whole for every token
    n_vocab: int

    @property
    def total(self) -> int:
        return sum(self.by_role.values())

    @property
    def is_moe(self) -> bool:
        return self.by_role.get(Role.EXPERTS, 0) > 0

    @property
    def expert_layers(self) -> list[int]:
        """The blocks that have routed experts (some MoE models start with dense layers)."""
        return [il for il, roles in enumerate(self.per_layer) if roles.get(Role.EXPERTS)]

    def layer_bytes(self, il: int, *, experts: bool = True) -> int:
        """Bytes of block `il`, with or without its routed experts."""
        return sum(n for role, n in self.per_layer[il].items() if experts or role is not Role.EXPERTS)

    def read_per_token(self) -> float:
        """Weight bytes one decoded token reads: everything always used, the LM head (token_embd when
        tied), and the routed experts in proportion expert_used_count / expert_count."""
        always = sum(n for role, n in self.by_role.items() if role not in (Role.EMBEDDINGS, Role.EXPERTS))
        if self.tied_output:
            always += self.by_role.get(Role.EMBEDDINGS, 0)
        share = self.n_expert_used / self.n_expert if self.n_expert else 0.0
        return always + self.by_role.get(Role.EXPERTS, 0) * share


def _int(info: GGUFInfo, template: str) -> int:
    value = info.metadata.get(template.format(arch=info.architecture or ""))
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _n_vocab(tensors: dict[str, TensorInfo]) -> int:
    head = tensors.get("output.weight") or tensors.get("token_embd.weight")
    return head.shape[1] if head is not None and len(head.shape) > 1 else 0


def weights(info: GGUFInfo) -> Weights:
    """Classify every tensor of `info` (the header only: sizes come from shapes and types)."""
    n_layer = info.block_count or 0
    by_role: Counter[Role] = Counter()
    per_layer: list[Counter[Role]] = [Counter() for _ in range(n_layer)]
    for tensor in info.tensors:
        role = role_of(tensor.name)
        by_role[role] += tensor.nbytes
        il = layer_of(tensor.name)
        if il is not None and il < n_layer:
            per_layer[il][role] += tensor.nbytes
    names = {t.name: t for t in info.tensors}
    return Weights(by_role=dict(by_role), per_layer=[dict(c) for c in per_layer],
                   n_expert=_int(info, Keys.LLM.EXPERT_COUNT), n_expert_used=_int(info, Keys.LLM.EXPERT_USED_COUNT),
                   tied_output="output.weight" not in names, n_vocab=_n_vocab(names))


def expert_tensor_names(info: GGUFInfo) -> list[str]:
    """Names of the routed-expert tensors, in file order (what `cpu-moe` moves to system RAM)."""
    return [t.name for t in info.tensors if role_of(t.name) is Role.EXPERTS]

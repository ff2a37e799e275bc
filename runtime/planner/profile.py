"""Which experts a MoE model's router picks, per layer, over some text: the data hot-expert
placement and pruning decide from.

llama.cpp names each layer's chosen expert ids `ffn_moe_topk-<layer>`; the eval callback
(runtime.llamacpp.overrides.TensorTap) copies them out as the graph runs. All logits are requested
so the last layer sees every token, not only the ones that produce logits: the counts of a profile
sum to tokens x expert layers x experts per token.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_write_text
from edge_ai.gguf_file import GGUFInfo
from edge_ai.tensor_roles import weights

TOPK_PREFIX = "ffn_moe_topk-"
SHADES = " .:-=+*#%@"  # heatmap: share of the busiest expert of the layer


@dataclass(frozen=True)
class ExpertProfile:
    """Per expert layer, how many times the router chose each expert."""

    model: str
    tokens: int
    n_expert: int
    n_expert_used: int
    counts: dict[int, list[int]]  # block index -> count per expert

    def hot_experts(self, layer: int, keep: int) -> list[int]:
        """The `keep` most-chosen experts of `layer`, busiest first (ties: lower id first)."""
        row = self.counts[layer]
        return sorted(range(self.n_expert), key=lambda e: (-row[e], e))[:keep]

    def routing_share(self, layer: int, experts: list[int]) -> float:
        """The fraction of `layer`'s expert picks that land on `experts`."""
        row = self.counts[layer]
        return sum(row[e] for e in experts) / max(1, sum(row))

    def heatmap(self) -> list[str]:
        """One text line per layer, one character per expert, darker = chosen more often."""
        lines = []
        for layer, row in sorted(self.counts.items()):
            top = max(row) or 1
            cells = "".join(SHADES[min(len(SHADES) - 1, round(c / top * (len(SHADES) - 1)))] for c in row)
            lines.append(f"blk.{layer:<3} |{cells}|")
        return lines

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> ExpertProfile:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(model=data["model"], tokens=data["tokens"], n_expert=data["n_expert"],
                       n_expert_used=data["n_expert_used"],
                       counts={int(k): [int(c) for c in v] for k, v in data["counts"].items()})
        except FileNotFoundError:
            raise EdgeAIError(f"no such expert profile: {path}; make one with `edge-ai moe profile`") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EdgeAIError(f"{path} is not an expert profile ({exc}); make one with `edge-ai moe profile`") from None


def require_moe(info: GGUFInfo) -> None:
    """The MoE tools' one-line refusal of a dense model."""
    if not weights(info).is_moe:
        raise EdgeAIError(f"{info.path.name} is a dense model (no routed experts): the MoE tools need a "
                          "mixture-of-experts model such as Qwen3-MoE, Mixtral or OLMoE")


def profile_experts(info: GGUFInfo, tokens: list[int], picks: dict[int, list[list[int]]]) -> ExpertProfile:
    """Count `picks` (block -> one row of chosen expert ids per token, from the eval callback)."""
    w = weights(info)
    counts = {layer: [0] * w.n_expert for layer in w.expert_layers}
    for layer, rows in picks.items():
        if len(rows) != len(tokens):
            raise EdgeAIError(f"layer {layer} routed {len(rows)} tokens of {len(tokens)}: the profile is incomplete")
        for row in rows:
            for expert in row:
                counts[layer][expert] += 1
    return ExpertProfile(model=info.path.name, tokens=len(tokens), n_expert=w.n_expert,
                         n_expert_used=w.n_expert_used, counts=counts)


def run_profile(info: GGUFInfo, text: str, *, n_ctx: int = 512, threads: int = 0,
                max_tokens: int = 16384) -> ExpertProfile:
    """Feed `text` (up to `max_tokens` tokens, in windows of `n_ctx`) through the model and count the
    router's picks."""
    from edge_ai.hardware import default_threads  # here: llama.cpp is slow to import, and the CLI
    from runtime.llamacpp.load import load_llama  # imports this module for --help too
    from runtime.llamacpp.overrides import TensorTap, tapped

    require_moe(info)
    tap = TensorTap(TOPK_PREFIX)
    threads = threads or default_threads()
    n_ctx = min(n_ctx, info.context_length or n_ctx)
    with tapped(tap):
        llm = load_llama(info.path, dict(n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                                         n_threads=threads, n_threads_batch=threads))
    try:
        tokens = llm.tokenize(text.encode(), add_bos=False, special=False)[:max_tokens]
        if not tokens:
            raise EdgeAIError("the calibration text is empty; give a file with some text")
        for start in range(0, len(tokens), n_ctx):
            llm.reset()
            llm.eval(tokens[start:start + n_ctx])
    finally:
        llm.close()
    return profile_experts(info, tokens, tap.rows)

"""A narrower-MLP student: every decoder layer keeps only its most important FFN channels.

Minitron's width pruning: a channel's importance is the mean magnitude of its activation (the
input of `down_proj`, i.e. act(gate) * up) over calibration tokens, so the channels the model
actually uses on this data survive. The kept channels are sliced out of gate/up (rows) and down
(columns) as they are, and the student starts as close to its parent as that width allows. All
layers keep the same width: `intermediate_size` is one number in the config and in GGUF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convert.distill.data import Block
from convert.distill.student import decoder_layers
from edge_ai.errors import EdgeAIError

CALIBRATION_ROWS = 16  # training rows the importances are measured on
GATED = ("gate_proj", "up_proj", "down_proj")  # llama-style MLP (Llama, Qwen, Mistral, Gemma)


def _mlps(model: Any) -> list[Any]:
    mlps = [getattr(layer, "mlp", None) for layer in decoder_layers(model)]
    if not all(m is not None and all(hasattr(m, name) for name in GATED) for m in mlps):
        raise EdgeAIError(f"--intermediate-size needs gated MLPs (gate_proj/up_proj/down_proj) and this "
                          f"{model.config.model_type} model has other ones; drop --intermediate-size")
    return mlps


def channel_importance(model: Any, blocks: Sequence[Block]) -> list[Any]:
    """Per layer, the mean |activation| of each FFN channel over the attended tokens of the first
    CALIBRATION_ROWS blocks."""
    import torch

    mlps = _mlps(model)
    rows = blocks[:CALIBRATION_ROWS]
    ids = torch.tensor([b.ids for b in rows])
    attention = torch.tensor([b.attention for b in rows])
    weight = attention.unsqueeze(-1).float()
    sums = [torch.zeros(m.down_proj.in_features) for m in mlps]

    def hook(index: int) -> Any:
        def accumulate(module: Any, inputs: tuple[Any, ...]) -> None:
            sums[index] += (inputs[0].abs().float() * weight).sum(dim=(0, 1))
        return accumulate

    handles = [m.down_proj.register_forward_pre_hook(hook(i)) for i, m in enumerate(mlps)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=attention)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [s / weight.sum() for s in sums]


def narrow_mlp(model: Any, width: int, blocks: Sequence[Block]) -> None:
    """Cut every layer's MLP of `model` (in place) to its `width` most active channels."""
    import torch

    current = model.config.intermediate_size
    if not isinstance(current, int) or not 1 <= width <= current:
        raise EdgeAIError(f"--intermediate-size {width} is out of range: the teacher's MLPs have {current} "
                          f"channels; pick 1..{current}")
    keep_channels(model, [torch.topk(score, width).indices.sort().values
                          for score in channel_importance(model, blocks)])


def keep_channels(model: Any, keep: Sequence[Any]) -> None:
    """Keep only the FFN channels `keep[i]` (index tensors of one length) of each layer i, in place."""
    widths = {len(k) for k in keep}
    if len(widths) != 1:
        raise EdgeAIError(f"every layer must keep as many channels (got {sorted(widths)}): the config has one width")
    for mlp, channels in zip(_mlps(model), keep, strict=True):
        for name in ("gate_proj", "up_proj"):
            setattr(mlp, name, _sliced(getattr(mlp, name), channels, dim=0))
        mlp.down_proj = _sliced(mlp.down_proj, channels, dim=1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = len(channels)
    model.config.intermediate_size = widths.pop()


def _sliced(linear: Any, keep: Any, dim: int) -> Any:
    """A copy of `linear` with only the `keep` outputs (dim 0) or inputs (dim 1)."""
    import torch

    weight = linear.weight.data.index_select(dim, keep)
    out = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                          dtype=weight.dtype, device=weight.device)
    out.weight.data.copy_(weight)
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias.data if dim == 1 else linear.bias.data.index_select(0, keep))
    return out

"""Distillation losses on temperature-softened logits, computed on target positions only.

- forward KL(teacher || student): the classic (Hinton) choice; the student covers all the
  teacher's modes, the default.
- reverse KL(student || teacher): MiniLLM; mode-seeking, the student avoids putting mass where
  the teacher puts none, which suits generation from a small model.
- generalised JSD with `beta` (TRL's GKD): interpolates between the two and stays bounded.
The divergence is scaled by T^2 so its gradient size does not shrink as the temperature grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edge_ai.errors import EdgeAIError

DIVERGENCES = ("forward", "reverse", "jsd")


@dataclass(frozen=True)
class LossOptions:
    divergence: str = "forward"  # forward | reverse | jsd
    temperature: float = 2.0     # softens both distributions so the teacher's "dark knowledge" shows
    alpha: float = 0.5           # weight of the divergence; (1 - alpha) goes to cross-entropy on the labels
    beta: float = 0.5            # jsd only: mixture weight of the teacher (GKD)

    def check(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise EdgeAIError(f"--loss {self.divergence!r} is unknown; use one of {', '.join(DIVERGENCES)}")
        if self.temperature <= 0:
            raise EdgeAIError(f"--temperature {self.temperature} must be above 0")
        if not 0 <= self.alpha <= 1:
            raise EdgeAIError(f"--alpha {self.alpha} must be within 0..1")
        if self.divergence == "jsd" and not 0 < self.beta < 1:
            raise EdgeAIError(f"--beta {self.beta} must be strictly between 0 and 1 (0 and 1 are the two KLs)")


def divergence(student_logits: Any, teacher_logits: Any, options: LossOptions) -> Any:
    """Per-row divergence [N] between the softened distributions of [N, vocab] logits."""
    import torch
    import torch.nn.functional as F

    t = options.temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    if options.divergence == "forward":
        div = (log_t.exp() * (log_t - log_s)).sum(-1)
    elif options.divergence == "reverse":
        div = (log_s.exp() * (log_s - log_t)).sum(-1)
    else:
        beta = options.beta
        log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1 - beta)]), dim=0)
        div = beta * (log_t.exp() * (log_t - log_m)).sum(-1) + (1 - beta) * (log_s.exp() * (log_s - log_m)).sum(-1)
    return div * t * t


def distill_loss(student_logits: Any, teacher_logits: Any, labels: Any, options: LossOptions) -> tuple[Any, Any, Any]:
    """(total, divergence, cross-entropy), each a mean over the given rows: logits [N, vocab] at the
    positions that predict a target, `labels` [N] the target ids."""
    import torch.nn.functional as F

    kd = divergence(student_logits, teacher_logits, options).mean()
    ce = F.cross_entropy(student_logits.float(), labels)
    return options.alpha * kd + (1 - options.alpha) * ce, kd, ce


def predicting_positions(ids: Any, target: Any, attention: Any) -> tuple[Any, Any]:
    """(mask [B, L-1] over logit positions that predict a target token, labels [B, L-1]): logits at
    position i predict token i + 1."""
    mask = target[:, 1:] & attention[:, :-1].bool()
    return mask, ids[:, 1:]


def topk_distill_loss(student_logits: Any, teacher_values: Any, teacher_ids: Any, labels: Any,
                      options: LossOptions) -> tuple[Any, Any, Any]:
    """`distill_loss` against cached top-k teacher logits ([N, k] values and token ids): forward KL
    from the teacher's distribution renormalised over its top k to the student's full softmax
    (only forward KL is defined from a truncated teacher)."""
    import torch.nn.functional as F

    t = options.temperature
    log_t = F.log_softmax(teacher_values.float() / t, dim=-1)
    log_s = F.log_softmax(student_logits.float() / t, dim=-1).gather(-1, teacher_ids)
    kd = ((log_t.exp() * (log_t - log_s)).sum(-1) * t * t).mean()
    ce = F.cross_entropy(student_logits.float(), labels)
    return options.alpha * kd + (1 - options.alpha) * ce, kd, ce

"""The KD training loop: teacher logits on the fly, student updated with AdamW, checkpoints that
a crash or full disk cannot corrupt, and an exact `--resume`.

Exactness comes from state, not luck: batch k of the run is a pure function of (seed, k)
(`data.batch_indices`), and a checkpoint holds the student's weights, the optimizer's moments,
the RNG state and the step, so a resumed run computes the same updates as one never stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convert.distill.data import Block, batch_indices
from convert.distill.logit_cache import LogitCache
from convert.distill.losses import LossOptions, distill_loss, divergence, predicting_positions, topk_distill_loss
from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_write_text

LATEST = "latest"  # file naming the newest complete checkpoint folder
STATE = "state.pt"


@dataclass(frozen=True)
class TrainOptions:
    steps: int                      # optimizer steps
    batch_size: int = 4             # blocks per micro-batch
    grad_accum: int = 1             # micro-batches per optimizer step (global batch = batch_size * grad_accum)
    lr: float = 5e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0      # clip: a few bad batches must not wreck a small student
    seed: int = 0                   # data order and torch RNG
    checkpoint_every: int = 0       # steps between checkpoints (0: only at the end)
    loss: LossOptions = field(default_factory=LossOptions)

    def check(self) -> None:
        self.loss.check()
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise EdgeAIError(f"--{name.replace('_', '-')} must be at least 1")
        if self.checkpoint_every < 0:
            raise EdgeAIError("--checkpoint-every must be 0 (end only) or a number of steps")

    def resume_key(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one for the result to be the same run."""
        data = asdict(self)
        del data["steps"], data["checkpoint_every"]
        return data


@dataclass
class StepLog:
    step: int
    loss: float
    kd: float
    ce: float
    tokens: int
    seconds: float  # wall time of the step (teacher and student passes, update)


ProgressFn = Callable[[int, int, str], None]


def train(teacher: Any, student: Any, blocks: Sequence[Block], options: TrainOptions, workdir: Path, *,
          resume: bool = False, progress: ProgressFn | None = None) -> list[StepLog]:
    """Train `student` towards `teacher` (a model, or a LogitCache of its top-k logits on `blocks`)
    in place; returns the log of the steps run now."""
    import torch

    options.check()
    if isinstance(teacher, LogitCache):
        if options.loss.divergence != "forward":
            raise EdgeAIError(f"--loss {options.loss.divergence} needs the whole teacher distribution; the top-k "
                              "logit cache supports forward KL only (drop --cache-topk)")
    else:
        teacher.eval()
    student.train()
    trained = [p for p in student.parameters() if p.requires_grad]  # LoRA: the adapters only
    optimizer = torch.optim.AdamW(trained, lr=options.lr, weight_decay=options.weight_decay)
    torch.manual_seed(options.seed)
    start = load_checkpoint(workdir, student, optimizer, options) if resume else 0
    ids_all = torch.tensor([b.ids for b in blocks])
    target_all = torch.tensor([b.target for b in blocks])
    attention_all = torch.tensor([b.attention for b in blocks])
    log: list[StepLog] = []
    for step in range(start, options.steps):
        step_began = time.monotonic()
        optimizer.zero_grad(set_to_none=True)
        parts = []
        for micro in range(options.grad_accum):
            rows = batch_indices(len(blocks), options.batch_size, options.seed, step * options.grad_accum + micro)
            parts.append(_micro_step(teacher, student, rows, ids_all[rows], target_all[rows], attention_all[rows],
                                     options))
        torch.nn.utils.clip_grad_norm_(trained, options.max_grad_norm)
        optimizer.step()
        tokens = sum(p[3] for p in parts)
        log.append(StepLog(step + 1, *(sum(p[i] * p[3] for p in parts) / tokens for i in range(3)), tokens,
                           time.monotonic() - step_began))
        done = step + 1
        if options.checkpoint_every and done % options.checkpoint_every == 0 and done < options.steps:
            save_checkpoint(workdir, student, optimizer, options, done)
        if progress:
            rate = sum(s.tokens for s in log) / max(sum(s.seconds for s in log), 1e-9)
            progress(done, options.steps, f"loss {log[-1].loss:.3f} KL {log[-1].kd:.3f} {rate:.0f} tok/s")
    return log


def _micro_step(teacher: Any, student: Any, rows: list[int], ids: Any, target: Any, attention: Any,
                options: TrainOptions) -> tuple[float, float, float, int]:
    """Forward both models and backward this micro-batch's share of the step loss (its mean over
    target tokens / accumulation steps, as in every gradient-accumulation loop); returns (loss, kd,
    ce, target tokens) for the log."""
    import torch

    mask, labels = predicting_positions(ids, target, attention)
    n = int(mask.sum())
    if n == 0:
        return 0.0, 0.0, 0.0, 0
    s_logits = student(input_ids=ids, attention_mask=attention).logits[:, :-1][mask]
    if isinstance(teacher, LogitCache):
        values, token_ids = teacher.rows(rows)
        loss, kd, ce = topk_distill_loss(s_logits, values[:, :-1][mask], token_ids[:, :-1][mask], labels[mask],
                                         options.loss)
    else:
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, attention_mask=attention).logits[:, :-1][mask]
        loss, kd, ce = distill_loss(s_logits, t_logits, labels[mask], options.loss)
    (loss / options.grad_accum).backward()
    return float(loss.detach()), float(kd.detach()), float(ce.detach()), n


def save_checkpoint(workdir: Path, student: Any, optimizer: Any, options: TrainOptions, step: int) -> None:
    """Write `step-N/` beside the previous checkpoint, then point `latest` at it (an atomic rename),
    then drop the older one: a crash or full disk at any moment leaves one complete checkpoint."""
    import torch

    folder = workdir / f"step-{step:06d}"
    tmp = workdir / f".{folder.name}.tmp-{os.getpid()}"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        torch.save({"step": step, "model": student.state_dict(), "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(), "options": options.resume_key()}, tmp / STATE)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgeAIError(f"cannot write checkpoint {folder}: {str(exc).splitlines()[0]}; the previous checkpoint "
                          "is intact, free some space and run again with --resume") from None
    previous = _latest(workdir)
    atomic_write_text(workdir / LATEST, folder.name)
    if previous is not None and previous != folder:
        shutil.rmtree(previous, ignore_errors=True)


def _latest(workdir: Path) -> Path | None:
    try:
        return workdir / (workdir / LATEST).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def load_checkpoint(workdir: Path, student: Any, optimizer: Any, options: TrainOptions) -> int:
    """Restore the newest checkpoint into `student` and `optimizer`; returns the step to continue from."""
    import torch

    folder = _latest(workdir)
    if folder is None or not (folder / STATE).is_file():
        raise EdgeAIError(f"--resume: no checkpoint in {workdir}; run without --resume to start")
    state = torch.load(folder / STATE, weights_only=True)
    if state["options"] != json.loads(json.dumps(options.resume_key())):
        raise EdgeAIError(f"--resume: {folder} was trained with other settings ({_changed(state['options'], options)}); "
                          "use the same settings, or start again without --resume")
    student.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])


def _changed(saved: dict[str, Any], options: TrainOptions) -> str:
    now = json.loads(json.dumps(options.resume_key()))
    return ", ".join(f"{k} was {saved.get(k)!r}, now {v!r}" for k, v in now.items() if saved.get(k) != v)


def divergence_to_teacher(student: Any, teacher: Any, blocks: Sequence[Block],
                          options: LossOptions = LossOptions(temperature=1.0)) -> float:
    """Mean divergence of the student from the teacher over the blocks' target positions (nats per
    token; by default KL(teacher || student) at temperature 1, the KLD the evaluator reports)."""
    import torch

    total, count = 0.0, 0
    was_training = student.training
    student.eval()
    with torch.no_grad():
        for block in blocks:
            ids, target, attention = (torch.tensor([x]) for x in (block.ids, block.target, block.attention))
            mask, _ = predicting_positions(ids, target, attention)
            s = student(input_ids=ids, attention_mask=attention).logits[:, :-1][mask]
            t = teacher(input_ids=ids, attention_mask=attention).logits[:, :-1][mask]
            total += float(divergence(s, t, options).sum())
            count += int(mask.sum())
    student.train(was_training)
    return total / max(count, 1)

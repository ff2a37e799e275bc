"""The KD training loop: teacher logits on the fly, student updated with AdamW, checkpoints that
a crash or full disk cannot corrupt, and an exact `--resume`.

Exactness comes from state, not luck: batch k of the run is a pure function of (seed, k)
(`data.batch_indices`), and a checkpoint holds the student's weights, the optimizer's moments,
the RNG state and the step, so a resumed run computes the same updates as one never stopped.

The loop runs under Hugging Face `accelerate`, so the same code is data-parallel when launched as
N processes (`accelerate launch`, torchrun, `--processes N`): each global micro-batch of
`batch_size * N` rows is split between the processes, and each one's loss is weighted by its share
of the target tokens, so the averaged gradient is the one a single process would compute on the
whole global batch. Only the main process writes checkpoints and reports progress.
"""

from __future__ import annotations

import contextlib
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

AUTOCAST = ("fp32", "bf16")
LATEST = "latest"  # file naming the newest complete checkpoint folder
STATE = "state.pt"


@dataclass(frozen=True)
class TrainOptions:
    steps: int                      # optimizer steps
    batch_size: int = 4             # blocks per micro-batch and process
    grad_accum: int = 1             # micro-batches per optimizer step
                                    # (global batch = batch_size * processes * grad_accum)
    lr: float = 5e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0      # clip: a few bad batches must not wreck a small student
    seed: int = 0                   # data order and torch RNG
    checkpoint_every: int = 0       # steps between checkpoints (0: only at the end)
    loss: LossOptions = field(default_factory=LossOptions)
    grad_checkpointing: bool = False  # recompute the student's activations in backward: less memory, more time
    autocast: str = "fp32"          # "bf16": both models' forward passes in bfloat16 autocast (losses in float32)

    def check(self) -> None:
        self.loss.check()
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise EdgeAIError(f"--{name.replace('_', '-')} must be at least 1")
        if self.checkpoint_every < 0:
            raise EdgeAIError("--checkpoint-every must be 0 (end only) or a number of steps")
        if self.autocast not in AUTOCAST:
            raise EdgeAIError(f"--autocast {self.autocast!r} is unknown; use one of {', '.join(AUTOCAST)}")

    def resume_key(self, processes: int = 1) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one for the result to be the same run
        (the global micro-batch, not its split: a run may resume on another number of processes)."""
        data = asdict(self)
        del data["steps"], data["checkpoint_every"], data["grad_checkpointing"]  # the last changes no number
        data["batch_size"] = self.batch_size * processes
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
    in place; returns the log of the steps run now (losses over the whole global batch, the same
    in every process)."""
    import torch
    from accelerate import Accelerator

    options.check()
    if isinstance(teacher, LogitCache):
        if options.loss.divergence != "forward":
            raise EdgeAIError(f"--loss {options.loss.divergence} needs the whole teacher distribution; the top-k "
                              "logit cache supports forward KL only (drop --cache-topk)")
    else:
        teacher.eval()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    if not isinstance(teacher, LogitCache):
        teacher.to(accelerator.device)
    student.train()
    if options.grad_checkpointing:
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trained = [p for p in student.parameters() if p.requires_grad]  # LoRA: the adapters only
    optimizer = torch.optim.AdamW(trained, lr=options.lr, weight_decay=options.weight_decay)
    torch.manual_seed(options.seed)
    model, optimizer = accelerator.prepare(student, optimizer)  # DDP-wrapped when there are several processes
    start = load_checkpoint(workdir, student, optimizer, options, world) if resume else 0
    device = accelerator.device
    ids_all = torch.tensor([b.ids for b in blocks])
    target_all = torch.tensor([b.target for b in blocks])
    attention_all = torch.tensor([b.attention for b in blocks])
    log: list[StepLog] = []
    for step in range(start, options.steps):
        step_began = time.monotonic()
        optimizer.zero_grad(set_to_none=True)
        totals = torch.zeros(4, dtype=torch.float64)  # loss, kd, ce (each times tokens), tokens: this process
        for micro in range(options.grad_accum):
            number = step * options.grad_accum + micro
            rows = batch_indices(len(blocks), options.batch_size * world, options.seed, number)
            rows = rows[rank * options.batch_size:(rank + 1) * options.batch_size]  # this process's share
            batch = (ids_all[rows].to(device), target_all[rows].to(device), attention_all[rows].to(device))
            last = micro == options.grad_accum - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):  # one gradient all-reduce per step
                totals += _micro_step(teacher, model, accelerator, rows, *batch, options)
        torch.nn.utils.clip_grad_norm_(trained, options.max_grad_norm)
        optimizer.step()
        totals = accelerator.reduce(totals.to(device), "sum").cpu() if world > 1 else totals
        tokens = max(float(totals[3]), 1.0)
        log.append(StepLog(step + 1, *(float(totals[i]) / tokens for i in range(3)), int(totals[3]),
                           time.monotonic() - step_began))
        done = step + 1
        if options.checkpoint_every and done % options.checkpoint_every == 0 and done < options.steps:
            save_checkpoint(workdir, student, optimizer, options, done, accelerator)
        if progress and accelerator.is_main_process:
            rate = sum(s.tokens for s in log) / max(sum(s.seconds for s in log), 1e-9)
            progress(done, options.steps, f"loss {log[-1].loss:.3f} KL {log[-1].kd:.3f} {rate:.0f} tok/s")
    if options.grad_checkpointing:
        student.gradient_checkpointing_disable()
    return log


def _micro_step(teacher: Any, model: Any, accelerator: Any, rows: list[int], ids: Any, target: Any, attention: Any,
                options: TrainOptions) -> Any:
    """Forward both models and backward this micro-batch's share of the step loss; returns
    [loss, kd, ce] summed over this process's target tokens, and their count, for the log.

    The step loss is the mean over the global micro-batch's target tokens, divided by the
    accumulation steps (as in every gradient-accumulation loop). The processes' gradients are
    averaged, so each one's mean is weighted by tokens * processes / global tokens; a process
    without a target token still runs backward, or the others would wait for it forever.
    """
    import torch

    mask, labels = predicting_positions(ids, target, attention)
    n = int(mask.sum())
    world = accelerator.num_processes
    n_global = int(accelerator.reduce(torch.tensor([n], device=ids.device), "sum")) if world > 1 else n
    with _autocast(ids.device, options):
        logits = model(input_ids=ids, attention_mask=attention).logits
    if n == 0:
        (logits.sum() * 0.0).backward()
        return torch.zeros(4, dtype=torch.float64)
    s_logits = logits[:, :-1][mask]
    if isinstance(teacher, LogitCache):
        values, token_ids = teacher.rows(rows)
        loss, kd, ce = topk_distill_loss(s_logits, values[:, :-1].to(ids.device)[mask],
                                         token_ids[:, :-1].to(ids.device)[mask], labels[mask], options.loss)
    else:
        with torch.no_grad(), _autocast(ids.device, options):
            t_logits = teacher(input_ids=ids, attention_mask=attention).logits[:, :-1][mask]
        loss, kd, ce = distill_loss(s_logits, t_logits, labels[mask], options.loss)
    (loss * (n * world / n_global) / options.grad_accum).backward()
    return torch.tensor([float(loss.detach()) * n, float(kd.detach()) * n, float(ce.detach()) * n, n],
                        dtype=torch.float64)


def _autocast(device: Any, options: TrainOptions) -> Any:
    """The forward passes' autocast (backward then runs in the dtypes the forward chose)."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.autocast == "bf16")


def save_checkpoint(workdir: Path, student: Any, optimizer: Any, options: TrainOptions, step: int,
                    accelerator: Any) -> None:
    """Write `step-N/` beside the previous checkpoint, then point `latest` at it (an atomic rename),
    then drop the older one: a crash or full disk at any moment leaves one complete checkpoint.
    The main process writes (every process holds the same weights and moments); the others wait
    for it and fail with it."""
    import torch

    error = None
    if accelerator.is_main_process:
        try:
            _write_checkpoint(workdir, {"step": step, "model": student.state_dict(), "optimizer": optimizer.state_dict(),
                                        "rng": torch.get_rng_state(),
                                        "options": options.resume_key(accelerator.num_processes)})
        except EdgeAIError as exc:
            error = exc
    if accelerator.num_processes > 1:
        failed = accelerator.reduce(torch.tensor([error is not None], dtype=torch.int32, device=accelerator.device))
        if error is None and int(failed):
            raise EdgeAIError("the main process could not write a checkpoint; see its error")
    if error is not None:
        raise error


def _write_checkpoint(workdir: Path, state: dict[str, Any]) -> None:
    import torch

    folder = workdir / f"step-{state['step']:06d}"
    tmp = workdir / f".{folder.name}.tmp-{os.getpid()}"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp / STATE)
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


def load_checkpoint(workdir: Path, student: Any, optimizer: Any, options: TrainOptions, processes: int = 1) -> int:
    """Restore the newest checkpoint into `student` and `optimizer`; returns the step to continue from."""
    import torch

    folder = _latest(workdir)
    if folder is None or not (folder / STATE).is_file():
        raise EdgeAIError(f"--resume: no checkpoint in {workdir}; run without --resume to start")
    state = torch.load(folder / STATE, weights_only=True)
    if state["options"] != json.loads(json.dumps(options.resume_key(processes))):
        raise EdgeAIError(f"--resume: {folder} was trained with other settings "
                          f"({_changed(state['options'], options.resume_key(processes))}); "
                          "use the same settings, or start again without --resume")
    student.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])


def _changed(saved: dict[str, Any], key: dict[str, Any]) -> str:
    now = json.loads(json.dumps(key))
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

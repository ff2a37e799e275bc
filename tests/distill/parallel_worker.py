"""One training run of the parallel test, in each process of a launched group: the tiny teacher's
half-depth student trained for a few steps; the first process writes the step log and the final
weights. Run as `parallel_worker.py TEACHER DATA WORKDIR OUT STEPS BATCH_SIZE [--resume] [--stop-at N]`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from convert.distill.data import load_examples, make_blocks
from convert.distill.launch import is_main_process
from convert.distill.student import build_student
from convert.distill.tokenizers import load_tokenizer
from convert.distill.train import TrainOptions, train

LAYERS = [0, 3]


def options(steps: int, batch_size: int) -> TrainOptions:
    """The run's settings, shared with the single-process reference in the test."""
    return TrainOptions(steps=steps, batch_size=batch_size, grad_accum=2, lr=1e-3, checkpoint_every=2, seed=7)


def setup(teacher: Path, data: Path) -> tuple:
    """(teacher model, student, training blocks), the same in every process."""
    tok = load_tokenizer(teacher)
    model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32, attn_implementation="eager")
    blocks = make_blocks(load_examples(data, tok), 32, pack=True, pad_id=tok.pad_token_id)
    return model, build_student(model, LAYERS), blocks


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("teacher", "data", "workdir", "out"):
        parser.add_argument(name, type=Path)
    parser.add_argument("steps", type=int)
    parser.add_argument("batch_size", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stop-at", type=int)
    args = parser.parse_args()
    teacher, student, blocks = setup(args.teacher, args.data)

    def progress(done: int, total: int, label: str) -> None:
        if done == args.stop_at:
            raise KeyboardInterrupt  # a kill after the checkpoint: the group goes down with it

    log = train(teacher, student, blocks, options(args.steps, args.batch_size), args.workdir, resume=args.resume,
                progress=progress)
    if is_main_process():
        torch.save(student.state_dict(), args.out.with_suffix(".pt"))
        args.out.write_text(json.dumps([asdict(step) for step in log]))


if __name__ == "__main__":
    main()

"""`--processes N`: run the same command as N data-parallel processes on this machine.

There is no training code of its own for it: the command is started again under torchrun (the
launcher `accelerate launch` uses too), whose environment `accelerate.Accelerator` reads in the
training loop (gloo on CPU). The first process does everything a single one would (progress,
checkpoints, export, report); the others only train, and their output is kept off the terminal so
an error is still one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence

from edge_ai.errors import EdgeAIError

RANK_ENV = "RANK"  # set by torchrun in every process it starts


def in_launched_process() -> bool:
    """True inside a process torchrun or `accelerate launch` started (it must not launch again)."""
    return RANK_ENV in os.environ


def is_main_process() -> bool:
    """True unless this is a secondary process of a launched group."""
    return int(os.environ.get(RANK_ENV, "0")) == 0


def run_as_processes(processes: int, program: Sequence[str]) -> int:
    """Run `python <program...>` (e.g. `-m edge_ai distill ...`) as `processes` local processes and
    return the group's exit status. The first process writes to this terminal (its progress bar,
    its one-line error); the others' output goes to files that are thrown away; torchrun's own
    failure report is silenced, the first process has said what went wrong."""
    if processes < 1:
        raise EdgeAIError(f"--processes {processes} must be at least 1")
    quiet = ",".join(f"{rank}:3" for rank in range(1, processes)) or "0"
    env = {"LOGLEVEL": "CRITICAL",  # read by torchrun's loggers when they are created
           "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}  # share the cores
    with tempfile.TemporaryDirectory(prefix="edge-ai-launch-") as log_dir, _environment(env):
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.run import parse_args, run

        logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
        args = parse_args(["--standalone", f"--nproc-per-node={processes}", f"--redirects={quiet}",
                           f"--log-dir={log_dir}", *program])
        try:
            run(args)
        except ChildFailedError:
            return 1
    return 0


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` as defaults in os.environ (which the processes inherit) while the group runs."""
    added = {key: value for key, value in values.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def wait_for_everyone() -> None:
    """Block until every process of a launched group gets here (no-op in a single process): the
    others must not read what the first one is still writing."""
    if in_launched_process():
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()

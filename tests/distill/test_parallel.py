"""Data-parallel training under accelerate: 2 CPU processes (gloo) follow the 1-process loss curve
with the same global batch, and an interrupted 2-process run resumes exactly, on 2 processes or 1."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from convert.distill.launch import run_as_processes
from convert.distill.train import train

sys.path.insert(0, str(Path(__file__).parent))

import parallel_worker  # noqa: E402

WORKER = str(Path(parallel_worker.__file__))
STEPS = 6
TOL = 1e-4  # float sums in another order (gradients all-reduced, loss sums per process)


def _close(a: list[float], b: list[float]) -> bool:
    return all(abs(x - y) <= TOL * max(1.0, abs(y)) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch_and_resume(teacher, train_text: Path,
                                                                       tmp_path: Path) -> None:
    import torch

    teacher_model, reference, blocks = parallel_worker.setup(teacher.path, train_text)
    whole = train(teacher_model, reference, blocks, parallel_worker.options(STEPS, 4), tmp_path / "one")
    args = [str(teacher.path), str(train_text), str(tmp_path / "two"), str(tmp_path / "two.json")]

    stopped = run_as_processes(2, [WORKER, *args, str(STEPS), "2", "--stop-at", "3"])
    assert stopped != 0 and (tmp_path / "two" / "latest").read_text() == "step-000002"
    shutil.copytree(tmp_path / "two", tmp_path / "two-then-one")

    assert run_as_processes(2, [WORKER, *args, str(STEPS), "2", "--resume"]) == 0
    resumed = json.loads((tmp_path / "two.json").read_text())
    print("1 process:", [round(s.loss, 5) for s in whole], "2 processes, resumed:",
          [round(s["loss"], 5) for s in resumed])
    assert [s["step"] for s in resumed] == [3, 4, 5, 6]
    assert [s["tokens"] for s in resumed] == [s.tokens for s in whole[2:]]
    for key in ("loss", "kd", "ce"):
        assert _close([s[key] for s in resumed], [getattr(s, key) for s in whole[2:]]), key
    weights = torch.load(tmp_path / "two.pt", weights_only=True)
    for name, value in reference.state_dict().items():
        assert torch.allclose(weights[name], value, atol=1e-4), name

    _, student, _ = parallel_worker.setup(teacher.path, train_text)  # the 2-process checkpoint, resumed alone
    on_one = train(teacher_model, student, blocks, parallel_worker.options(STEPS, 4), tmp_path / "two-then-one",
                   resume=True)
    assert _close([s.loss for s in on_one], [s["loss"] for s in resumed])

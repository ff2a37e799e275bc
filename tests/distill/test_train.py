"""Student init from a layer subset, the KD losses, and the training loop on a tiny random teacher."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from convert.distill.data import load_examples, make_blocks
from convert.distill.losses import LossOptions, divergence
from convert.distill.student import build_student, parse_keep_layers, uniform_layers
from convert.distill.tokenizers import load_tokenizer
from convert.distill.train import TrainOptions, divergence_to_teacher, train
from edge_ai.errors import EdgeAIError


def _teacher_model(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")


def _blocks(path: Path, tok, length: int = 32):
    return make_blocks(load_examples(path, tok), length, pack=True, pad_id=tok.pad_token_id)


@pytest.fixture(scope="module")
def setup(teacher, train_text: Path, held_text: Path):
    tok = load_tokenizer(teacher.path)
    return _teacher_model(teacher.path), _blocks(train_text, tok), _blocks(held_text, tok)


def test_layer_choice() -> None:
    assert uniform_layers(4, 2) == [0, 3]
    assert uniform_layers(18, 9) == [0, 2, 4, 6, 8, 11, 13, 15, 17]
    assert uniform_layers(6, 6) == list(range(6)) and uniform_layers(5, 1) == [0]
    assert parse_keep_layers("0, 2,3", 4) == [0, 2, 3]
    with pytest.raises(EdgeAIError, match=r"layer\(s\) 4, 7 out of range, the teacher has layers 0..3"):
        parse_keep_layers("0,4,7", 4)
    with pytest.raises(EdgeAIError, match="increasing"):
        parse_keep_layers("2,1", 4)
    with pytest.raises(EdgeAIError, match="out of range"):
        uniform_layers(4, 5)


def test_student_is_the_teacher_with_the_chosen_blocks(setup) -> None:
    import torch

    teacher_model, blocks, _ = setup
    student = build_student(teacher_model, [0, 2])
    assert student.config.num_hidden_layers == 2 and teacher_model.config.num_hidden_layers == 4
    t_sd, s_sd = teacher_model.state_dict(), student.state_dict()
    for name, value in s_sd.items():
        src = name.replace("layers.1.", "layers.2.")
        assert torch.equal(value, t_sd[src]), name
    ids = torch.tensor([blocks[0].ids])
    full = student(input_ids=ids).logits
    cached = student(input_ids=ids[:, :-1], use_cache=True)  # the KV cache is indexed by the new layer numbers
    last = student(input_ids=ids[:, -1:], past_key_values=cached.past_key_values).logits
    assert torch.allclose(full[0, -1], last[0, -1], atol=1e-4)


def test_divergences() -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 11, generator=gen), torch.randn(5, 11, generator=gen)
    fwd = divergence(s, t, LossOptions("forward", temperature=1.0))
    rev = divergence(s, t, LossOptions("reverse", temperature=1.0))
    assert torch.allclose(fwd, divergence(t, s, LossOptions("reverse", temperature=1.0)))
    assert (fwd > 0).all() and (rev > 0).all() and not torch.allclose(fwd, rev)
    jsd = divergence(s, t, LossOptions("jsd", temperature=1.0, beta=0.5))
    assert (jsd > 0).all() and (jsd <= math.log(2) + 1e-6).all()  # JSD with beta 0.5 is bounded by ln 2
    assert torch.allclose(divergence(s, s, LossOptions("jsd", beta=0.3)), torch.zeros(5), atol=1e-6)
    t2 = divergence(s, t, LossOptions("forward", temperature=2.0))
    assert not torch.allclose(t2, fwd)
    for bad in (LossOptions("mse"), LossOptions(temperature=0), LossOptions(alpha=1.5), LossOptions("jsd", beta=1)):
        with pytest.raises(EdgeAIError):
            bad.check()


@pytest.mark.slow
def test_short_run_halves_the_students_kld_to_the_teacher(setup, tmp_path: Path) -> None:
    """The issue's acceptance test: half-depth student, 30 steps of the default forward KL, held-out
    KLD (the evaluator's measure) at most half the initial student's."""
    teacher_model, blocks, held = setup
    student = build_student(teacher_model, uniform_layers(4, 2))
    before = divergence_to_teacher(student, teacher_model, held)
    options = TrainOptions(steps=30, batch_size=4, lr=3e-3, loss=LossOptions(temperature=1.0, alpha=1.0))
    log = train(teacher_model, student, blocks, options, tmp_path)
    after = divergence_to_teacher(student, teacher_model, held)
    print(f"held-out KLD {before:.4f} -> {after:.4f}; loss {log[0].loss:.3f} -> {log[-1].loss:.3f}")
    assert len(log) == 30 and after <= before / 2


@pytest.mark.slow
@pytest.mark.parametrize("loss", [LossOptions("reverse", temperature=1.0, alpha=1.0),
                                  LossOptions("jsd", temperature=1.0, alpha=1.0, beta=0.5)], ids=lambda o: o.divergence)
def test_reverse_kl_and_jsd_reduce_their_divergence(setup, loss: LossOptions, tmp_path: Path) -> None:
    teacher_model, blocks, held = setup
    student = build_student(teacher_model, uniform_layers(4, 2))
    before = divergence_to_teacher(student, teacher_model, held, loss)
    train(teacher_model, student, blocks, TrainOptions(steps=20, batch_size=4, lr=1e-3, loss=loss), tmp_path)
    after = divergence_to_teacher(student, teacher_model, held, loss)
    print(f"{loss.divergence}: held-out divergence {before:.4f} -> {after:.4f}")
    assert after < 0.95 * before


def _run(setup, workdir: Path, *, steps: int, resume: bool = False, stop_at: int | None = None):
    teacher_model, blocks, _ = setup
    student = build_student(teacher_model, [0, 3])
    options = TrainOptions(steps=steps, batch_size=2, grad_accum=2, lr=1e-3, checkpoint_every=2, seed=7)

    def progress(done: int, total: int, label: str) -> None:
        if done == stop_at:
            raise KeyboardInterrupt

    try:
        log = train(teacher_model, student, blocks, options, workdir, resume=resume, progress=progress)
    except KeyboardInterrupt:
        log = None
    return student, log


@pytest.mark.slow
def test_resume_after_an_interruption_matches_an_uninterrupted_run(setup, tmp_path: Path) -> None:
    import torch

    whole, whole_log = _run(setup, tmp_path / "a", steps=6)
    _, stopped = _run(setup, tmp_path / "b", steps=6, stop_at=3)  # checkpoint at 2, killed during 3
    assert stopped is None and (tmp_path / "b" / "latest").read_text() == "step-000002"
    resumed, resumed_log = _run(setup, tmp_path / "b", steps=6, resume=True)
    assert [s.step for s in resumed_log] == [3, 4, 5, 6]
    assert [round(s.loss, 5) for s in resumed_log] == [round(s.loss, 5) for s in whole_log[2:]]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.slow
def test_a_failed_checkpoint_write_keeps_the_previous_one(setup, tmp_path: Path, monkeypatch) -> None:
    import errno

    import torch

    _run(setup, tmp_path, steps=3)  # writes step-000002
    real_save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(EdgeAIError, match="cannot write checkpoint .*step-000002 is intact|previous checkpoint is intact"):
        _run(setup, tmp_path, steps=5, resume=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "latest").read_text() == "step-000002"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000002"]
    _, log = _run(setup, tmp_path, steps=3, resume=True)
    assert [s.step for s in log] == [3]


def test_resume_with_other_settings_or_nothing_to_resume_is_refused(setup, tmp_path: Path) -> None:
    teacher_model, blocks, _ = setup
    student = build_student(teacher_model, [0, 3])
    with pytest.raises(EdgeAIError, match="no checkpoint"):
        train(teacher_model, student, blocks, TrainOptions(steps=2), tmp_path, resume=True)
    train(teacher_model, student, blocks, TrainOptions(steps=2, batch_size=1, checkpoint_every=1), tmp_path)
    with pytest.raises(EdgeAIError, match="lr was 0.0005, now 0.001"):
        train(teacher_model, student, blocks, TrainOptions(steps=3, batch_size=1, lr=1e-3), tmp_path, resume=True)


@pytest.mark.slow
def test_gradient_checkpointing_changes_no_number_and_bf16_autocast_still_learns(setup, tmp_path: Path) -> None:
    teacher_model, blocks, _ = setup

    def losses(**kwargs) -> list[float]:
        student = build_student(teacher_model, [0, 3])
        options = TrainOptions(steps=4, batch_size=2, lr=3e-3, loss=LossOptions(temperature=1.0, alpha=1.0), **kwargs)
        return [step.loss for step in train(teacher_model, student, blocks, options, tmp_path)]

    plain, recomputed, bf16 = losses(), losses(grad_checkpointing=True), losses(autocast="bf16")
    print(f"fp32 {plain}\ncheckpointed {recomputed}\nbf16 {bf16}")
    assert recomputed == pytest.approx(plain, rel=1e-5)
    assert bf16 != plain and bf16 == pytest.approx(plain, rel=0.05)  # rounding, not another training
    with pytest.raises(EdgeAIError, match="--autocast 'fp16' is unknown"):
        TrainOptions(steps=1, autocast="fp16").check()

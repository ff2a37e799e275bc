"""`edge-ai distill` end to end, as a user runs it: tiny teacher -> half-depth student -> Q8_0 GGUF
that our engine loads and generates from, report.json, and the --accept-kld gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def edge_ai(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env=os.environ.copy())


def _distill(teacher, train_text: Path, held_text: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return edge_ai("distill", str(teacher.path), "--data", str(train_text), "-o", str(out), "--student-layers", "2",
                   "--max-length", "32", "--lr", "3e-3", "--alpha", "1", "--temperature", "1", "--outtype", "f32",
                   "--quantize", "Q8_0", "--eval-text", str(held_text), "--ctx", "32", *extra)


@pytest.mark.slow
def test_distill_to_a_gguf_the_engine_runs(teacher, train_text: Path, held_text: Path, tmp_path: Path) -> None:
    from runtime.llm.engine import Engine
    from runtime.llm.events import DoneEvent, SamplingParams

    out = tmp_path / "out"
    result = _distill(teacher, train_text, held_text, out, "--steps", "30", "--checkpoint-every", "10",
                      "--cache-topk", "64")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    gguf = out / "student-Q8_0.gguf"
    assert report["accepted"] and report["output"] == str(gguf) and gguf.is_file()
    assert report["keep_layers"] == [0, 3] and len(report["steps"]) == 30
    models = report["models"]
    print({name: (row["kld_mean"], row["top1"], row["size_mib"]) for name, row in models.items()})
    assert models["teacher"]["kld_mean"] < 1e-3  # the reference against itself
    assert models["student"]["kld_mean"] < models["init"]["kld_mean"] / 2  # what the training bought, in GGUF
    assert models["student"]["size_mib"] < models["teacher"]["size_mib"]
    assert "student" in result.stdout and "wrote" in result.stdout
    assert (out / "student-hf" / "config.json").is_file() and not (out / ".work").exists()
    assert json.loads((out / "logit-cache" / "manifest.json").read_text())["k"] == 64
    engine = Engine(gguf)
    try:
        events = list(engine.complete("the quick brown", SamplingParams(temperature=0, max_tokens=6)))
    finally:
        engine.close()
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.metrics.generated_tokens >= 1 and done.text


@pytest.mark.slow
def test_the_kld_gate_refuses_and_says_by_how_much_with_a_lora_student_on_two_processes(
        teacher, train_text: Path, held_text: Path, tmp_path: Path) -> None:
    """Also the launcher (two training processes, one report, one error line) and a narrower MLP."""
    out = tmp_path / "out"
    result = _distill(teacher, train_text, held_text, out, "--steps", "2", "--accept-kld", "0.0001", "--json",
                      "--lora", "4", "--processes", "2", "--batch-size", "2", "--intermediate-size", "48")
    assert result.returncode == 1
    report = json.loads((out / "report.json").read_text())
    assert not report["accepted"] and report["output"] is None and not list(out.glob("*.gguf"))
    assert report["missed_by"] == pytest.approx(report["models"]["student"]["kld_mean"] - 0.0001)
    assert "over --accept-kld 0.0001; no GGUF written" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [step["tokens"] for step in report["steps"]] == [4 * 31, 4 * 31]  # 2 processes x 2 packed rows
    assert json.loads((out / "student-hf" / "config.json").read_text())["intermediate_size"] == 48


@pytest.mark.slow
def test_an_existing_smaller_checkpoint_as_the_student(teacher, train_text: Path, held_text: Path,
                                                       tmp_path: Path) -> None:
    """--student: a 2-layer random model of the teacher's family with the teacher's tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(teacher.path)
    config.num_hidden_layers, config.layer_types = 2, config.layer_types[:2]
    torch.manual_seed(3)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "small")
    teacher.hf_tokenizer.save_pretrained(tmp_path / "small")
    out = tmp_path / "out"
    result = _distill(teacher, train_text, held_text, out, "--student", str(tmp_path / "small"), "--student-layers",
                      "2", "--steps", "1")
    assert result.returncode == 1 and "--student-layers shapes a student built from the teacher" in result.stderr
    result = edge_ai("distill", str(teacher.path), "--data", str(train_text), "-o", str(out), "--student",
                     str(tmp_path / "small"), "--max-length", "32", "--lr", "3e-3", "--alpha", "1", "--temperature",
                     "1", "--outtype", "f32", "--quantize", "Q8_0", "--eval-text", str(held_text), "--ctx", "32",
                     "--steps", "15", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    models = report["models"]
    print({name: round(row["kld_mean"], 4) for name, row in models.items()})
    assert report["keep_layers"] is None and models["student"]["kld_mean"] < 0.8 * models["init"]["kld_mean"]
    assert (out / "student-Q8_0.gguf").is_file()


def test_a_student_with_another_vocabulary_is_refused_before_training(teacher, train_text: Path,
                                                                      tmp_path: Path) -> None:
    from tiny_hf import build_checkpoint

    other = build_checkpoint("mistral", tmp_path / "mistral", num_hidden_layers=1)  # SentencePiece vocabulary
    result = edge_ai("distill", str(teacher.path), "--data", str(train_text), "-o", str(tmp_path / "o"), "--student",
                     str(other.path), "--steps", "1")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "teacher and student tokenizers differ: vocabulary size" in result.stderr
    assert "pick a student that uses the teacher's tokenizer" in result.stderr
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_bad_input_is_one_line(teacher, train_text: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for args, message in [((str(teacher.path), "--data", str(empty)), "is empty"),
                          ((str(teacher.path), "--data", str(train_text), "--keep-layers", "0,9"), "out of range"),
                          ((str(tmp_path), "--data", str(train_text)), "no config.json")]:
        result = edge_ai("distill", *args, "-o", str(tmp_path / "o"), "--steps", "1")
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("o/*.gguf"))


@pytest.mark.slow
def test_a_gguf_teacher_with_a_sentencepiece_vocabulary_and_sequence_kd(train_text: Path, held_text: Path,
                                                                         tmp_path: Path) -> None:
    """A GGUF teacher (as the default gemma3-270m ships): transformers dequantizes it for training, the
    student's tokenizer.model is rebuilt from the GGUF vocabulary, and the shipped GGUF has the
    teacher's exact tokens (the evaluator also refuses any vocabulary difference). With --seq-kd
    our engine runs the GGUF to continue every document first."""
    import gguf
    from tiny_hf import build_checkpoint

    from convert.gguf import convert_checkpoint

    ckpt = build_checkpoint("mistral", tmp_path / "hf", num_hidden_layers=4)
    teacher_gguf = tmp_path / "teacher.gguf"
    convert_checkpoint(ckpt.path, teacher_gguf, outtype="f32")
    out = tmp_path / "out"
    result = edge_ai("distill", str(teacher_gguf), "--data", str(train_text), "-o", str(out), "--student-layers", "2",
                     "--max-length", "32", "--steps", "5", "--outtype", "f32", "--quantize", "Q8_0",
                     "--eval-text", str(held_text), "--ctx", "32", "--json", "--seq-kd", "--seq-kd-max-tokens", "8")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    answers = (out / "teacher-answers.jsonl").read_text().splitlines()[1:]
    assert len(answers) == train_text.read_text().count("\n\n") + 1
    assert sum(bool(json.loads(line)["text"]) for line in answers) > len(answers) / 2  # a random teacher may end at once
    assert report["models"]["teacher"]["model"] == str(teacher_gguf)
    assert report["models"]["student"]["kld_mean"] < report["models"]["init"]["kld_mean"]

    def tokens(path: Path) -> list:
        return gguf.GGUFReader(path).get_field("tokenizer.ggml.tokens").contents()

    assert tokens(out / "student-Q8_0.gguf") == tokens(teacher_gguf)

"""The toolchain commands as a user runs them: quantize, imatrix, eval, sweep (tiny real model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_gguf import write_tiny_llama

from edge_ai.gguf_file import read_gguf

TEXT = ("Offline assistants keep data on the device. The model reads the text, predicts the next token, "
        "and the quantizer decides how many bits each weight keeps. ") * 12


def edge_ai(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env=os.environ.copy())


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_llama(tmp_path / "tiny-f32.gguf", n_embd=256, n_ff=512)


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "calib.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_quantize_dry_run_then_real_with_override(tiny: Path, tmp_path: Path) -> None:
    dry = json.loads(edge_ai("quantize", str(tiny), "--type", "Q8_0", "--tensor-type", "ffn_down=F16",
                             "--dry-run", "--json").stdout)
    out = tmp_path / "tiny-q8.gguf"
    result = edge_ai("quantize", str(tiny), str(out), "-q", "Q8_0", "--tensor-type", r"ffn_down=F16", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["output_bytes"] == out.stat().st_size
    assert abs(dry["output_bytes"] - out.stat().st_size) <= 1024  # the estimate misses only header bytes
    types = {t.name: t.ggml_type for t in read_gguf(out).tensors}
    assert types["blk.0.ffn_down.weight"] == "F16" and types["blk.0.attn_q.weight"] == "Q8_0"


def test_imatrix_then_eval(tiny: Path, text_file: Path, tmp_path: Path) -> None:
    imatrix = tmp_path / "tiny.imatrix.gguf"
    made = edge_ai("imatrix", str(tiny), "--text", str(text_file), "-o", str(imatrix), "--ctx", "64", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["tensors"] > 0 and imatrix.exists()
    quant = tmp_path / "tiny-iq.gguf"
    assert edge_ai("quantize", str(tiny), str(quant), "-q", "IQ4_XS", "--imatrix", str(imatrix)).returncode == 0
    result = edge_ai("eval", str(quant), "--ref", str(tiny), "--text", str(text_file), "--ctx", "64", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ppl"] > 1 and report["kld_mean"] >= 0 and 0 <= report["top1"] <= 100


def test_sweep_picks_under_a_budget_and_writes_it(tiny: Path, text_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "picked.gguf"
    result = edge_ai("quantize", str(tiny), str(out), "--sweep", "Q4_0,Q8_0", "--text", str(text_file),
                     "--ctx", "64", "--max-kld", "10", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    by_type = {row["type"]: row for row in data["rows"]}
    assert by_type["Q8_0"]["kld_mean"] < by_type["Q4_0"]["kld_mean"] < 10
    # both are within the KLD budget: the smaller file
    assert data["picked"] == "Q4_0" and out.exists() and data["output"] == str(out)
    assert read_gguf(out).file_type_name == "Q4_0"

    sized = edge_ai("quantize", str(tiny), str(out), "--sweep", "Q4_0,Q8_0", "--text", str(text_file),
                    "--ctx", "64", "--chunks", "1", "--max-size", str(by_type["Q8_0"]["size_bytes"]), "--json")
    assert sized.returncode == 0, sized.stderr
    assert json.loads(sized.stdout)["picked"] == "Q8_0"  # both fit the size budget: the most faithful
    assert read_gguf(out).file_type_name == "Q8_0"


def test_sweep_with_nothing_in_budget_prints_the_table_then_one_error(tiny: Path, text_file: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "picked.gguf"
    result = edge_ai("quantize", str(tiny), str(out), "--sweep", "Q4_0,Q8_0", "--text", str(text_file),
                     "--ctx", "64", "--max-kld", "0")
    assert result.returncode == 1
    assert "quantization sweep" in result.stdout  # the measurements are shown although nothing fits
    assert all(row in result.stdout for row in ("F32", "Q4_0", "Q8_0")), result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no quantization fits KLD <= 0" in lines[0], result.stderr
    assert not out.exists() and not list(tmp_path.glob("edge-ai-sweep-*"))


def test_sweep_file_errors_are_one_line(tiny: Path, text_file: Path, tmp_path: Path) -> None:
    from convert.quantize import default_output_path

    missing = edge_ai("quantize", str(tiny), str(tmp_path / "no-such-dir" / "out.gguf"), "--sweep", "Q8_0",
                      "--text", str(text_file), "--ctx", "64", "--max-kld", "10")
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 1 and len(lines) == 1, missing.stderr
    assert "cannot create the sweep's working folder" in lines[0] and "no-such-dir" in lines[0]

    taken = tmp_path / "taken"  # the picked file is moved into this folder, where its name is taken
    taken.mkdir()
    blocker = taken / default_output_path(tiny, "Q8_0").name
    blocker.write_text("keep me")
    result = edge_ai("quantize", str(tiny), str(taken), "--sweep", "Q8_0", "--text", str(text_file),
                     "--ctx", "64", "--chunks", "1", "--max-kld", "10")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "cannot write the picked Q8_0" in lines[0] and "quantization sweep" in result.stdout
    assert blocker.read_text() == "keep me" and not list(tmp_path.glob("edge-ai-sweep-*"))


def test_sweep_with_an_output_path_but_no_budget_is_refused(tiny: Path, text_file: Path, tmp_path: Path) -> None:
    """Without --max-size / --max-kld nothing is picked, so an output path would be silently ignored."""
    out = tmp_path / "picked.gguf"
    result = edge_ai("quantize", str(tiny), str(out), "--sweep", "Q4_0,Q8_0", "--text", str(text_file))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert f"--sweep writes {out} only with a budget" in lines[0] and "--max-kld" in lines[0]
    assert result.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["calib.txt", "edge-home",
                                                                                  "tiny-f32.gguf"]
    compared = edge_ai("quantize", str(tiny), "--sweep", "Q8_0", "--text", str(text_file), "--ctx", "64",
                       "--chunks", "1", "--json")  # no output path: compare only
    assert compared.returncode == 0, compared.stderr
    data = json.loads(compared.stdout)
    assert data["picked"] is None and data["output"] is None and [r["type"] for r in data["rows"]] == ["F32", "Q8_0"]


def test_bad_toolchain_input_is_one_line(tiny: Path, tmp_path: Path) -> None:
    for args, needle in [
        (("quantize", str(tiny), "--type", "Q9"), "unknown quantization type 'Q9'"),
        (("quantize", str(tiny)), "--type"),
        (("eval", str(tiny), "--text", str(tmp_path / "none.txt")), "no such text file"),
        (("quantize", str(tmp_path / "missing.gguf"), "-q", "Q8_0"), "missing.gguf"),
    ]:
        result = edge_ai(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and needle in lines[0], (args, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge-home", "tiny-f32.gguf"]  # nothing half-written


def test_eval_of_a_truncated_gguf_is_one_line(tiny: Path, text_file: Path, tmp_path: Path) -> None:
    data = tiny.read_bytes()
    for size, needle in ((len(data) // 2, " is truncated: tensor 'blk."),
                         (64, " is truncated or corrupt: the header says 21 tensors, which cannot fit in a 64-byte file")):
        cut = tmp_path / f"cut-{size}.gguf"
        cut.write_bytes(data[:size])
        for args in (("eval", str(cut)), ("eval", str(tiny), "--ref", str(cut))):
            result = edge_ai(*args, "--text", str(text_file), "--ctx", "64")
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and len(lines) == 1, (args, result.stderr)
            assert f"{cut.name}{needle}" in lines[0] and lines[0].endswith("re-download or re-convert it"), lines[0]


@pytest.mark.slow
def test_convert_gguf_then_chat_with_it(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy("qwen2")
    out = tmp_path / "qwen2-tiny.gguf"
    result = edge_ai("convert", "gguf", str(src), str(out), "--outtype", "f16", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["architecture"] == "qwen2" and report["outtype"] == "f16" and out.exists()
    chat = edge_ai("ask", "-m", str(out), "-n", "4", "-t", "0", "hello")
    assert chat.returncode == 0, chat.stderr
    (src / "config.json").unlink()
    broken = edge_ai("convert", "gguf", str(src), str(tmp_path / "x.gguf"))
    assert broken.returncode == 1 and "config.json" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()


class _OpensAFile:
    """Unpickling this creates a file: what a malicious checkpoint would do (with worse commands)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.slow
def test_convert_allow_pickle_flag(checkpoint_copy, tmp_path: Path) -> None:
    """`--allow-pickle`: a .bin checkpoint is refused without it, converts to the same GGUF as the
    safetensors with it, and even then a pickle that runs code is refused (weights_only=True)."""
    import gguf
    import numpy as np
    import torch
    from safetensors.numpy import load_file

    from convert.gguf import convert_checkpoint

    src = checkpoint_copy("qwen2")
    reference = convert_checkpoint(src, tmp_path / "ref.gguf", outtype="f32")
    state = {}
    for shard in sorted(src.glob("model-*.safetensors")):
        state.update({k: torch.from_numpy(v) for k, v in load_file(shard).items()})
        shard.unlink()
    (src / "model.safetensors.index.json").unlink()
    torch.save(state, src / "pytorch_model.bin")
    out = tmp_path / "out" / "m.gguf"

    refused = edge_ai("convert", "gguf", str(src), str(out))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and "--allow-pickle" in lines[0], refused.stderr
    assert not out.exists()

    allowed = edge_ai("convert", "gguf", str(src), str(out), "--outtype", "f32", "--allow-pickle", "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["output"] == str(out)
    got = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(out).tensors}
    want = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(reference.output).tensors}
    assert got.keys() == want.keys() and all(np.array_equal(got[n], want[n]) for n in want)

    marker = tmp_path / "code-ran"
    torch.save({**state, "model.norm.weight": _OpensAFile(marker)}, src / "pytorch_model.bin")
    evil = edge_ai("convert", "gguf", str(src), str(tmp_path / "evil.gguf"), "--allow-pickle")
    lines = evil.stderr.strip().splitlines()
    assert evil.returncode == 1 and len(lines) == 1, evil.stderr
    assert "cannot load pytorch_model.bin with torch.load(weights_only=True)" in lines[0]
    assert not marker.exists() and not (tmp_path / "evil.gguf").exists()


@pytest.mark.slow
def test_computed_imatrix_drives_an_iq2_xs_quantization(text_file: Path, tmp_path: Path) -> None:
    """A tiny HF checkpoint (256 wide, so i-quant blocks fit) converted, calibrated with `edge-ai
    imatrix`, then quantized to IQ2_XS, which llama.cpp refuses to make without an importance matrix."""
    from tiny_hf import assert_runs_like, build_checkpoint

    checkpoint = build_checkpoint("llama", tmp_path / "hf", hidden_size=256, intermediate_size=512)
    f16 = tmp_path / "tiny-f16.gguf"
    assert edge_ai("convert", "gguf", str(checkpoint.path), str(f16)).returncode == 0
    imatrix = tmp_path / "tiny.imatrix.gguf"
    calibrated = edge_ai("imatrix", str(f16), "--text", str(text_file), "-o", str(imatrix), "--ctx", "64", "--json")
    assert calibrated.returncode == 0, calibrated.stderr
    calibration = json.loads(calibrated.stdout)
    assert calibration["tensors"] == 2 * 7  # q, k, v, o, gate, up, down in each of 2 blocks

    out = tmp_path / "tiny-IQ2_XS.gguf"
    refused = edge_ai("quantize", str(f16), str(out), "-q", "IQ2_XS")
    assert refused.returncode == 1 and "needs an importance matrix" in refused.stderr and not out.exists()
    made = edge_ai("quantize", str(f16), str(out), "-q", "IQ2_XS", "--imatrix", str(imatrix), "--json")
    assert made.returncode == 0, made.stderr
    info = read_gguf(out)
    assert info.tensor_type_counts()["IQ2_XS"] >= 10
    assert info.metadata["quantize.imatrix.file"] == imatrix.name
    assert info.metadata["quantize.imatrix.chunks_count"] == calibration["chunks"] > 0
    assert_runs_like(out, f16, min_correlation=0.5)  # measured 0.84

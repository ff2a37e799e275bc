"""`edge-ai convert onnx` on real MiniLM weights and a tiny random Llama with KV cache: export,
quantize, parity vs PyTorch, the report, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from run_cli import edge_ai

from convert.onnx import convert_onnx
from edge_ai.errors import EdgeAIError

PLAIN_ONNXRUNTIME = textwrap.dedent("""
    import sys, numpy as np, onnxruntime as ort
    from tokenizers import Tokenizer
    folder = sys.argv[1]
    tok = Tokenizer.from_file(folder + "/tokenizer.json")
    enc = tok.encode("Offline models keep data private.")
    ids = np.array([enc.ids], dtype=np.int64)
    session = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
    out = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})[0]
    ours = ("edge_ai", "convert", "runtime", "torch")
    print(out.shape[-1], int(np.isfinite(out).all()), ",".join(sorted(m for m in sys.modules if m.split(".")[0] in ours)))
""")


@pytest.mark.slow
def test_minilm_int8_is_per_channel_accurate_and_loads_in_plain_onnxruntime(minilm_onnx, tmp_path: Path) -> None:
    out, report = minilm_onnx("int8")
    assert report["kept"] == "int8" and report["task"] == "feature-extraction"
    fp32, int8 = report["variants"]
    assert fp32["precision"] == "fp32" and fp32["parity"]["cos_min"] >= 0.9999
    assert int8["parity"]["cos_mean"] >= 0.99 and int8["parity"]["cos_min"] >= 0.98, int8["parity"]
    assert int8["size"] < fp32["size"] / 3  # int8 weights (embeddings included), not a copy of fp32
    assert fp32["scheme"] == "fp32" and int8["scheme"].startswith("dynamic int8 of MatMul, Gather; per-channel")
    assert report == json.loads((out / "report.json").read_text())
    assert {"model.onnx", "tokenizer.json", "config.json"} <= {p.name for p in out.iterdir()}
    assert int8["files"] == {"model.onnx": (out / "model.onnx").stat().st_size}
    print(f"MiniLM fp32 {fp32['seconds'] * 1e3:.0f} ms, int8 {int8['seconds'] * 1e3:.0f} ms "
          f"({int8['speedup']:.2f}x), int8 cosine mean {int8['parity']['cos_mean']:.4f} min {int8['parity']['cos_min']:.4f}")

    plain = subprocess.run([sys.executable, "-c", PLAIN_ONNXRUNTIME, str(out)], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["384", "1"]  # no edge-ai (nor torch) module needed to run it


@pytest.mark.slow
def test_existing_output_is_refused_then_replaced_with_force(minilm_onnx, minilm_src: Path, tmp_path: Path) -> None:
    out, _ = minilm_onnx("none")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    refused = edge_ai("convert", "onnx", str(minilm_src), str(out), "--quantize", "int8")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].endswith(
        f"{out} already exists; choose another folder or pass --force to replace it")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    target = tmp_path / "work" / "replace"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("the user's")
    report = convert_onnx(minilm_src, target, quantize="none", force=True)
    assert report.kept == "fp32" and not (target / "old.txt").exists() and (target / "model.onnx").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["replace"]  # no temp folder left beside it


@pytest.mark.slow
def test_tiny_llama_with_past_auto_measures_three_variants(tiny_llama: Path, tmp_path: Path) -> None:
    report = convert_onnx(tiny_llama, tmp_path / "llama-onnx", quantize="auto")
    variants = {v.precision: v for v in report.variants}
    assert list(variants) == ["fp32", "int8", "int4"] and report.task == "text-generation-with-past"
    assert variants["fp32"].parity["top1"] == 1.0 and variants["fp32"].parity["kld_mean"] < 1e-6
    assert 0 < variants["int8"].parity["kld_mean"] and variants["int8"].parity["top1"] > 0.5
    assert variants["int4"].scheme.startswith("int4 MatMulNBits, blocks of 32")  # the report says how
    kept = variants[report.kept]
    assert kept.problem is None  # auto never keeps an over-budget or slower-than-fp32 variant
    for name in variants:  # every loser is explained
        if name != report.kept and name != "fp32":
            assert name in report.decision
    saved = json.loads((tmp_path / "llama-onnx" / "report.json").read_text())
    assert saved["kept"] == report.kept and len(saved["variants"]) == 3
    # the KV-cache inputs are part of the graph: a second step can continue from the first's cache
    import onnxruntime as ort
    names = [i.name for i in ort.InferenceSession(str(tmp_path / "llama-onnx" / "model.onnx")).get_inputs()]
    assert "past_key_values.0.key" in names and "past_key_values.1.value" in names


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_hf import build_checkpoint

    return build_checkpoint("llama", tmp_path_factory.mktemp("llama") / "llama").path


@pytest.mark.slow
def test_decoder_with_past_continues_from_its_cache(tiny_llama: Path, tmp_path: Path) -> None:
    """Prefill then one cached step gives the logits of running the whole sequence (the past is wired)."""
    from runtime.onnx_session import open_session, zero_past_feeds

    convert_onnx(tiny_llama, tmp_path / "fp32", task="text-generation-with-past")
    session = open_session(tmp_path / "fp32" / "model.onnx")
    ids = np.array([[5, 17, 42, 9, 100]], dtype=np.int64)

    def step(tokens: np.ndarray, start: int, past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        n = tokens.shape[1]
        outputs = session.run(None, {"input_ids": tokens, "attention_mask": np.ones((1, start + n), np.int64),
                                     "position_ids": np.arange(start, start + n, dtype=np.int64)[None], **past})
        names = [o.name for o in session.get_outputs()]
        cache = {n.replace("present.", "past_key_values."): v for n, v in zip(names[1:], outputs[1:])}
        return outputs[0], cache

    full, _ = step(ids, 0, zero_past_feeds(session))
    _, cache = step(ids[:, :4], 0, zero_past_feeds(session))
    last, _ = step(ids[:, 4:], 4, cache)
    np.testing.assert_allclose(last[0, -1], full[0, -1], atol=1e-4)


@pytest.mark.slow  # optimum's task tables take seconds to import
def test_bad_sources_and_tasks_are_one_line_errors(minilm_src: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()

    def fails(src: Path, **options: str) -> str:
        with pytest.raises(EdgeAIError) as info:
            convert_onnx(src, work / "out", **options)
        return str(info.value)

    assert "is not a folder" in fails(work / "missing")
    empty = work / "empty"
    empty.mkdir()
    assert "has no config.json" in fails(empty)
    alien = work / "alien"
    alien.mkdir()
    (alien / "config.json").write_text(json.dumps({"model_type": "mamba_from_mars"}))
    (alien / "model.safetensors").write_bytes(b"")
    assert "optimum-onnx cannot export model_type 'mamba_from_mars'" in fails(alien)
    assert fails(minilm_src, task="text-generation-with-past").endswith(
        "a 'bert' model cannot be exported for text-generation-with-past; it can do: feature-extraction")
    assert "--quantize int3 is not one of" in fails(minilm_src, quantize="int3")
    assert sorted(p.name for p in work.iterdir()) == ["alien", "empty"]  # nothing half-written

    result = edge_ai("convert", "onnx", str(alien), str(work / "out"))  # as the user sees it: one line, no traceback
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("use `edge-ai convert gguf` for llama.cpp instead")


def test_corrupt_onnx_file_is_a_clear_error(tmp_path: Path) -> None:
    from runtime.embedder import Embedder

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(EdgeAIError, match="tokenizer.json cannot be read"):
        Embedder(folder)
    from tokenizers import Tokenizer, models
    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(folder / "tokenizer.json"))
    (folder / "model.onnx").write_bytes(b"\x08\x07not really a protobuf" * 10)
    with pytest.raises(EdgeAIError, match=r"model\.onnx is not a usable ONNX model \(.*\); re-export it"):
        Embedder(folder)

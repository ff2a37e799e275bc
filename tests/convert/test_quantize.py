"""`quantize` and the imatrix file format on real models: the default Gemma 3 270M (Q4_K_M,
requantized) and the tiny llama from tests/tiny_gguf.py widened to 256 so k-quants and i-quants apply."""

from __future__ import annotations

import sys
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from convert.imatrix_file import ImatrixEntry, read_imatrix, write_imatrix
from convert.quantize import (
    QUANT_TYPES,
    default_output_path,
    parse_tensor_type,
    quantize,
    resolve_type,
    types_table,
)
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_gguf
from tiny_gguf import write_tiny_llama
from tiny_hf import assert_runs_like


def _leftovers(folder: Path) -> list[str]:
    """What is in `folder` besides the test's EDGE_AI_HOME (where the load check remembers files)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "edge-home")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-f32.gguf", n_embd=256, n_ff=512)


@pytest.fixture(scope="module")
def gemma_quants(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """{type: (dry-run report, real report, progress calls)} for Q4_0 and Q8_0 from the Q4_K_M model."""
    out = tmp_path_factory.mktemp("gemma-quants")
    results = {}
    for qtype in ("Q4_0", "Q8_0"):
        dst = out / f"gemma-{qtype}.gguf"
        planned = quantize(model_path, dst, qtype, dry_run=True, threads=2)
        assert not dst.exists()  # a dry run writes nothing
        calls: list[tuple[int, int]] = []
        report = quantize(model_path, dst, qtype, threads=2, progress=lambda d, t, sink=calls: sink.append((d, t)))
        results[qtype] = (planned, report, calls)
    return results


@pytest.mark.slow
def test_requantized_gemma_sizes_estimates_and_loads(gemma_quants, model_path: Path) -> None:
    q4_plan, q4, q4_calls = gemma_quants["Q4_0"]
    q8_plan, q8, _ = gemma_quants["Q8_0"]
    assert q4.output_bytes == q4.dst.stat().st_size and q8.output_bytes == q8.dst.stat().st_size
    assert q4.output_bytes < q8.output_bytes
    assert 4.5 < q4.output_bpw < q8.output_bpw < 9  # the Q8_0 token embedding keeps Q4_0's bpw high
    for plan, real in ((q4_plan, q4), (q8_plan, q8)):
        assert plan.dry_run and plan.dst is None and not real.dry_run
        assert abs(plan.output_bytes - real.output_bytes) / real.output_bytes < 0.05
        assert plan.tensor_type_counts == real.tensor_type_counts
        assert real.input_bytes == model_path.stat().st_size and real.seconds > 0
    info = read_gguf(q4.dst)
    assert info.file_type_name == "Q4_0" and info.tensor_type_counts()["Q4_0"] > 100
    # token_embd's 640-wide rows cannot take the Q6_K llama.cpp wants: it falls back to Q8_0
    assert q4.fallbacks == 1 and any("falling back" in w for w in q4.warnings)
    total = len(info.tensors)
    assert q4_calls[0] == (0, total) and q4_calls[-1] == (total, total)
    assert [d for d, _ in q4_calls] == sorted(d for d, _ in q4_calls)
    for report in (q4, q8):
        assert_runs_like(report.dst, model_path, min_correlation=0.9)
    assert report.to_dict()["tensor_type_counts"] == q8.tensor_type_counts


@pytest.mark.slow
def test_requantize_refused_when_disallowed(model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(EdgeAIError, match="already quantized"):
        quantize(model_path, tmp_path / "out.gguf", "Q8_0", allow_requantize=False)
    assert _leftovers(tmp_path) == []


def test_tensor_overrides_output_and_embedding_types(tiny: Path, tmp_path: Path) -> None:
    dst = tmp_path / "tiny-Q4_0.gguf"
    report = quantize(tiny, dst, "Q4_0", tensor_types=[parse_tensor_type(r"blk\.1\.attn_q=q8_0")],
                      output_type="Q6_K", embedding_type="f16")
    types = {t.name: t.ggml_type for t in read_gguf(dst).tensors}
    assert types["blk.1.attn_q.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "Q4_0"
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "F16"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert {t.name: t.type for t in report.tensors} == types
    assert_runs_like(dst, tiny, min_correlation=0.9)  # measured 0.977


def test_bad_override_and_type_names(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(EdgeAIError, match="unknown quantization type 'Q4_K_Z'.*IQ2_XS.*Q4_K_M"):
        quantize(tiny, tmp_path / "a.gguf", "Q4_K_Z")
    with pytest.raises(EdgeAIError, match="file mixture; the tensor type is Q4_K"):
        quantize(tiny, tmp_path / "a.gguf", "Q4_0", tensor_types=[("attn_v", "Q4_K_M")])
    with pytest.raises(EdgeAIError, match="matches no tensor"):
        quantize(tiny, tmp_path / "a.gguf", "Q4_0", tensor_types=[("attn_vv", "Q8_0")])
    with pytest.raises(EdgeAIError, match="not a valid regular expression"):
        quantize(tiny, tmp_path / "a.gguf", "Q4_0", tensor_types=[("attn_(v", "Q8_0")])
    with pytest.raises(EdgeAIError, match="PATTERN=TYPE"):
        parse_tensor_type("attn_v")
    with pytest.raises(EdgeAIError, match="is the input model"):
        quantize(tiny, tiny, "Q8_0")
    assert _leftovers(tmp_path) == []


def test_truncated_or_foreign_input_is_refused(tiny: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    with pytest.raises(EdgeAIError, match="truncated"):
        quantize(truncated, tmp_path / "out" / "a.gguf", "Q8_0")
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(EdgeAIError, match="not a GGUF file"):
        quantize(text, tmp_path / "out" / "a.gguf", "Q8_0")
    with pytest.raises(EdgeAIError, match="no such model file"):
        quantize(tmp_path / "missing.gguf", tmp_path / "out" / "a.gguf", "Q8_0")
    assert _leftovers(tmp_path) == ["notes.gguf", "truncated.gguf"]


def test_unwritable_output_leaves_nothing(tiny: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with pytest.raises(EdgeAIError, match="cannot write"):
        quantize(tiny, blocker / "out.gguf", "Q8_0")
    assert _leftovers(tmp_path) == ["a-file"]


def test_requantize_refused_without_permission_on_tiny(tiny: Path, tmp_path: Path) -> None:
    q4 = quantize(tiny, tmp_path / "q4.gguf", "Q4_0").dst
    with pytest.raises(EdgeAIError, match="already quantized"):
        quantize(q4, tmp_path / "q8.gguf", "Q8_0", allow_requantize=False)
    assert quantize(q4, tmp_path / "q8.gguf", "Q8_0").output_bytes > q4.stat().st_size
    assert _leftovers(tmp_path) == ["q4.gguf", "q8.gguf"]


def _synthetic_imatrix(model: Path, path: Path) -> Path:
    """Positive random activations for every matrix llama-imatrix would cover."""
    rng = np.random.default_rng(0)
    entries = {
        t.name: ImatrixEntry(rng.uniform(1, 20, (1, t.shape[0])).astype(np.float32), np.array([10], np.float32))
        for t in read_gguf(model).tensors if len(t.shape) == 2 and t.name != "token_embd.weight"
    }
    return write_imatrix(path, entries, datasets=["synthetic"], chunk_count=4, chunk_size=128)


def test_iq2_xs_needs_an_imatrix_and_works_with_one(tiny: Path, tmp_path: Path) -> None:
    assert resolve_type("iq2_xs").needs_imatrix
    dst = tmp_path / "tiny-IQ2_XS.gguf"
    with pytest.raises(EdgeAIError, match="needs an importance matrix"):
        quantize(tiny, dst, "IQ2_XS")
    assert _leftovers(tmp_path) == []
    assert quantize(tiny, dst, "IQ2_XS", dry_run=True).needs_imatrix  # a dry run reports it instead

    imatrix = _synthetic_imatrix(tiny, tmp_path / "tiny.imatrix.gguf")
    report = quantize(tiny, dst, "IQ2_XS", imatrix=imatrix)
    assert report.imatrix_entries == 15
    info = read_gguf(dst)
    assert info.tensor_type_counts()["IQ2_XS"] >= 10
    assert info.metadata["quantize.imatrix.file"] == "tiny.imatrix.gguf"
    assert info.metadata["quantize.imatrix.chunks_count"] == 4
    assert_runs_like(dst, tiny, min_correlation=0.5)  # measured 0.77: 2-bit random weights are hard


def test_imatrix_for_another_model_is_refused(tiny: Path, tmp_path: Path) -> None:
    other = write_tiny_llama(tmp_path / "narrow.gguf")  # 64-wide: every entry has the wrong size
    imatrix = _synthetic_imatrix(other, tmp_path / "narrow.imatrix.gguf")
    with pytest.raises(EdgeAIError, match="does not match tiny-f32.gguf"):
        quantize(tiny, tmp_path / "out.gguf", "IQ2_XS", imatrix=imatrix)
    assert not (tmp_path / "out.gguf").exists()


def test_imatrix_file_round_trip(tmp_path: Path, tiny: Path) -> None:
    sums = np.arange(2 * 8, dtype=np.float32).reshape(2, 8)
    entries = {
        "blk.0.ffn_up_exps.weight": ImatrixEntry(sums, np.array([4, 0], np.float32)),
        "blk.0.attn_q.weight": ImatrixEntry(np.full((1, 8), 6, np.float32), np.array([3], np.float32)),
    }
    path = write_imatrix(tmp_path / "m.imatrix.gguf", entries, ["a.txt", "b.txt"], chunk_count=7, chunk_size=512)
    info = read_gguf(path)
    assert info.metadata["general.type"] == "imatrix" and "general.architecture" not in info.metadata
    shapes = {t.name: t.shape for t in info.tensors}  # ggml order, as llama-imatrix writes them
    assert shapes["blk.0.ffn_up_exps.weight.in_sum2"] == (8, 2)
    assert shapes["blk.0.ffn_up_exps.weight.counts"] == (1, 2)
    back = read_imatrix(path)
    assert (back.datasets, back.chunk_count, back.chunk_size) == (["a.txt", "b.txt"], 7, 512)
    assert np.array_equal(back.entries["blk.0.ffn_up_exps.weight"].in_sum2, sums)
    # mean() is what quantize hands llama.cpp (flattened); an expert that saw no token gets 1s, like llama-quantize
    assert back.entries["blk.0.attn_q.weight"].mean().tolist() == [[2.0] * 8]
    assert back.entries["blk.0.ffn_up_exps.weight"].mean().tolist() == [[v / 4 for v in range(8)], [1.0] * 8]

    with pytest.raises(EdgeAIError, match="not an importance matrix"):
        read_imatrix(tiny)
    cut = tmp_path / "cut.imatrix.gguf"
    cut.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(EdgeAIError, match="truncated"):
        read_imatrix(cut)


def test_legacy_imatrix_is_read(tmp_path: Path) -> None:
    import struct

    name = b"blk.0.attn_q.weight"
    values = np.arange(1, 5, dtype=np.float32)
    data = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 2, 4) + values.tobytes()
    data += struct.pack("<i", 9) + struct.pack("<i", 4) + b"wiki"
    path = tmp_path / "old.dat"
    path.write_bytes(data)
    back = read_imatrix(path)
    assert back.legacy and back.datasets == ["wiki"] and back.chunk_count == 9
    assert back.entries["blk.0.attn_q.weight"].mean().tolist() == [[0.5, 1.0, 1.5, 2.0]]


def test_type_table_and_names() -> None:
    assert resolve_type("q4_k").name == "Q4_K_M" and resolve_type(" Q8_0 ").ftype == llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    for name in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1",
                 "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S",
                 "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "Q2_K_S"):
        assert name in QUANT_TYPES
    assert {t.name for t in QUANT_TYPES.values() if t.needs_imatrix} >= {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS",
                                                                          "IQ2_S", "IQ2_M", "Q2_K_S"}
    assert QUANT_TYPES["Q4_K_M"].nominal_bpw == 4.5 and QUANT_TYPES["Q8_0"].bpw == 8.5
    assert types_table().row_count == len(QUANT_TYPES)
    assert default_output_path(Path("/m/gemma-3-270m-q4_k_m.gguf"), "q8_0") == Path("/m/gemma-3-270m-Q8_0.gguf")
    assert default_output_path(Path("model-f16.gguf"), "Q4_K") == Path("model-Q4_K_M.gguf")


def test_split_model_shard_is_refused(tmp_path: Path) -> None:
    shard = write_tiny_llama(tmp_path / "model-00001-of-00002.gguf", n_embd=256, n_ff=512,
                             extra_metadata={"split.count": 2, "split.no": 0})
    with pytest.raises(EdgeAIError, match="one of 2 shards of a split model; merge them first"):
        quantize(shard, tmp_path / "out.gguf", "Q8_0")
    assert not (tmp_path / "out.gguf").exists()

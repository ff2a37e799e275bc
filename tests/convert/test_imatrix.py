"""`compute_imatrix` on real models: the default Gemma 3 270M (dense) and a tiny MoE GGUF written here.

Values are checked independently: blk.0's attention projections read the attn_norm output, which
numpy recomputes from the token embedding rows in the file (Q8_0, dequantized by gguf-py) — so the
ctypes view of ggml tensors, the callback and the writer are all tested against arithmetic.
"""

from __future__ import annotations

import ctypes
import math
import sys
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from convert.imatrix import EXPERT_COUNTS_KEY, compute_imatrix
from convert.imatrix_file import read_imatrix
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf
from runtime.llamacpp import ggml_tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_gguf
from tiny_gguf import vocabulary, write_tiny_llama

CTX = 128
CHUNKS = 2

TEXT = """\
The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps out of
habit: one hundred and twelve, worn smooth in the middle by a century of boots. At the top he
trimmed the wick, polished the great lens with a soft cloth and wrote the weather in a ledger whose
first pages were older than his grandfather. Fog came in from the west most nights in autumn, thick
enough to swallow the beam a few hundred yards out, and on those nights he also wound the clockwork
of the horn so that ships could hear the rock they could not see.

In the village below, the baker started her ovens at four. She made rye loaves for the fishermen,
sweet buns for the children who walked past on their way to school, and on Fridays a dark fruit
cake that people ordered weeks ahead. Her kitchen smelled of caraway and burnt sugar. She kept the
recipes in her head, because the one time she had written them down the notebook had fallen into a
bucket of water and she had decided that paper was not to be trusted.

Mathematics teaches patience in a different way. A proof that seems obvious can hide a gap that
takes an afternoon to find, and a calculation that looks hopeless can collapse into a single line
once the right substitution appears. Students learn to check small cases first, to draw pictures,
to ask what would happen if a condition were removed, and to write every step so that a tired
reader at midnight could follow it without guessing.

Computers, meanwhile, do exactly what they are told and nothing more. A program that sorts a list
of names must decide what to do with accents, with capital letters and with names that contain
spaces; a program that adds money must never round a cent away. Good engineers write tests that
describe these decisions, run them on every change, and read error messages carefully instead of
guessing, because the message usually says precisely what went wrong and where.

When the storm finally arrived in November, the keeper stayed awake for two nights. The sea threw
stones onto the gallery, the windows rattled in their frames, and the beam turned without stopping
while he drank cold tea and listened to the radio. On the third morning the wind dropped, the sky
cleared to a pale washed blue, and a fishing boat that had sheltered in the lee of the island came
home with its nets full and its crew waving at the tower as they passed.
"""

DENSE_WEIGHTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def _read_imatrix(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
    reader = gguf.GGUFReader(path)
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    data = {t.name: np.array(t.data) for t in reader.tensors}
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml order (ne)
    return fields, data, shapes


@pytest.fixture(scope="module")
def gemma_imatrix(model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("imatrix") / "gemma.imatrix.gguf"
    calls: list[tuple[int, int]] = []
    report = compute_imatrix(model_path, TEXT, out, ctx=CTX, max_chunks=CHUNKS, threads=2,
                             progress=lambda done, total: calls.append((done, total)))
    return report, out, calls


def test_layout_of_ggml_tensor_matches_this_build() -> None:
    ggml_tensor.verify_layout()  # raises on any mismatch
    assert ctypes.sizeof(ggml_tensor.GGMLTensor) == 336
    assert ggml_tensor.lib().ggml_op_name(ggml_tensor.op_id("MUL_MAT_ID")) == b"MUL_MAT_ID"


def test_broadcast_weight_matrices_follow_ggml() -> None:
    """A 3-D/4-D MUL_MAT weight with fewer matrices than its input is broadcast the way ggml does it:
    input matrix (i2, i3) meets weight matrix (i2 // (ne12 // ne02), i3 // (ne13 // ne03)), so each
    weight matrix collects a block of consecutive input matrices (not every ne02-th one)."""
    from convert.imatrix import _Collector

    ne02, ne03, ne12, ne13, rows, n_per_row = 2, 2, 6, 4, 5, 3
    x = np.random.default_rng(0).standard_normal((ne13, ne12, rows, n_per_row)).astype(np.float32)
    collector = _Collector()
    collector.add_dense("blk.0.w", x, ne02, ne03)
    collector.add_dense("blk.0.w", x, ne02, ne03)  # a second call adds to the same entry
    expected = np.zeros((ne03, ne02, n_per_row))
    for i3 in range(ne13):
        for i2 in range(ne12):  # ggml_compute_forward_mul_mat: i02 = i12 / r2, i03 = i13 / r3
            expected[i3 // (ne13 // ne03), i2 // (ne12 // ne02)] += 2 * np.sum(x[i3, i2].astype(np.float64) ** 2, 0)
    entry = collector.entries()["blk.0.w"]
    np.testing.assert_allclose(entry.in_sum2, expected.reshape(ne02 * ne03, n_per_row), rtol=1e-6)
    n_inputs = (ne12 // ne02) * (ne13 // ne03)  # input matrices per weight matrix
    assert entry.counts.tolist() == [2 * n_inputs * rows] * (ne02 * ne03)
    with pytest.raises(RuntimeError, match="do not broadcast"):
        collector.add_dense("blk.1.w", x, 4, 1)


def test_dense_model_has_an_entry_per_matmul_weight(gemma_imatrix, model_path: Path) -> None:
    report, out, calls = gemma_imatrix
    tokens = CTX * CHUNKS
    assert (report.chunks, report.chunk_size, report.tokens) == (CHUNKS, CTX, tokens)
    assert report.text_tokens >= tokens and report.expert_counts == {} and report.experts_per_token == 0
    assert calls == [(1, CHUNKS), (2, CHUNKS)]

    weights = {t.name: t for t in read_gguf(model_path).tensors}
    expected = sorted(n for n in weights if n.startswith("blk.") and n.split(".")[2] in DENSE_WEIGHTS)
    assert len(expected) == 18 * len(DENSE_WEIGHTS)

    fields, data, shapes = _read_imatrix(out)
    assert fields["general.type"] == "imatrix"
    assert fields["imatrix.datasets"] == ["calibration text"]
    assert (fields["imatrix.chunk_count"], fields["imatrix.chunk_size"]) == (CHUNKS, CTX)
    assert EXPERT_COUNTS_KEY not in fields
    names = sorted(n.removesuffix(".in_sum2") for n in data if n.endswith(".in_sum2"))
    assert names == expected and report.tensors == len(expected)
    assert len(data) == 2 * len(expected)  # in_sum2 + counts, nothing else
    for name in expected:
        n_per_row = weights[name].shape[0]
        assert shapes[f"{name}.in_sum2"] == (n_per_row, 1), name
        assert shapes[f"{name}.counts"] == (1, 1), name
        sums = data[f"{name}.in_sum2"]
        assert sums.dtype == np.float32 and np.all(np.isfinite(sums)) and np.all(sums >= 0), name
        assert sums.max() > 0, name
        assert data[f"{name}.counts"].ravel().tolist() == [float(tokens)], name  # last layer not pruned
    back = read_imatrix(out)  # the project's reader agrees
    assert sorted(back.entries) == expected and (back.chunk_count, back.chunk_size) == (CHUNKS, CTX)


def _attn_norm_sums(model_path: Path, n_chunks: int) -> np.ndarray:
    """Sum over tokens of attn_norm(embedding)^2 per column for blk.0, computed from the file."""
    llm = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    try:
        tokens = llm.tokenize(TEXT.encode(), add_bos=True, special=False)[: CTX * n_chunks]
        bos = llm.token_bos()
    finally:
        llm.close()
    for chunk in range(n_chunks):
        tokens[chunk * CTX] = bos  # each chunk starts with BOS, as llama-imatrix does
    info = read_gguf(model_path)
    tensors = {t.name: t for t in info.tensors}
    n_embd = info.embedding_length
    eps = info.metadata["gemma3.attention.layer_norm_rms_epsilon"]
    raw = np.memmap(model_path, dtype=np.uint8, mode="r")
    embd = tensors["token_embd.weight"]
    assert embd.ggml_type == "Q8_0"
    row_bytes = embd.nbytes // embd.shape[1]
    rows = np.stack([raw[embd.offset + t * row_bytes: embd.offset + (t + 1) * row_bytes] for t in tokens])
    x = gguf.quants.dequantize(rows, gguf.GGMLQuantizationType.Q8_0).astype(np.float64) * math.sqrt(n_embd)
    norm = tensors["blk.0.attn_norm.weight"]
    weight = np.frombuffer(raw[norm.offset: norm.offset + norm.nbytes], dtype=np.float32)
    y = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + eps) * weight
    return np.sum(y * y, axis=0)


def test_values_match_activations_recomputed_from_the_weights(gemma_imatrix, model_path: Path) -> None:
    _, out, _ = gemma_imatrix
    _, data, _ = _read_imatrix(out)
    expected = _attn_norm_sums(model_path, CHUNKS)
    for proj in ("attn_q", "attn_k", "attn_v"):  # all three read the same attn_norm output
        np.testing.assert_allclose(data[f"blk.0.{proj}.weight.in_sum2"][0], expected, rtol=2e-3, atol=1e-3)


def test_one_chunk_is_the_first_part_of_two(gemma_imatrix, model_path: Path, tmp_path: Path) -> None:
    _, two_path, _ = gemma_imatrix
    out = tmp_path / "one.gguf"
    report = compute_imatrix(model_path, TEXT, out, ctx=CTX, max_chunks=1, threads=2)
    assert (report.chunks, report.tokens) == (1, CTX)
    fields, one, _ = _read_imatrix(out)
    _, two, _ = _read_imatrix(two_path)
    assert fields["imatrix.chunk_count"] == 1 and one.keys() == two.keys()
    np.testing.assert_allclose(one["blk.0.attn_q.weight.in_sum2"][0], _attn_norm_sums(model_path, 1),
                               rtol=2e-3, atol=1e-3)
    for name in one:
        if name.endswith(".counts"):
            assert one[name].ravel().tolist() == [float(CTX)]
        else:  # chunk 1 is computed identically in both runs; chunk 2 only adds
            assert np.all(two[name] >= one[name] * (1 - 1e-5)), name
            assert np.any(two[name] > one[name] * 1.01), name


# --- a tiny MoE model ----------------------------------------------------------------------------

N_EXPERT, N_EXPERT_USED, N_EMBD, N_FF, N_LAYER = 4, 2, 64, 64, 2


def write_tiny_moe(path: Path, seed: int = 0) -> Path:
    """A Mixtral-style "llama" GGUF: 2 blocks, 4 experts (2 used per token), random F32 weights."""
    tokens, token_types, merges = vocabulary()
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-moe")
    w.add_context_length(512)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // 4)
    w.add_rope_freq_base(10000.0)
    w.add_expert_count(N_EXPERT)
    w.add_expert_used_count(N_EXPERT_USED)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_add_bos_token(False)
    rng = np.random.default_rng(seed)

    def weight(*shape: int, scale: float = 0.1) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w.add_tensor("token_embd.weight", weight(len(tokens), N_EMBD, scale=1.0))
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", weight(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_k.weight", weight(N_EMBD // 2, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_v.weight", weight(N_EMBD // 2, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_output.weight", weight(N_EMBD, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate_inp.weight", weight(N_EXPERT, N_EMBD, scale=1.0))  # the router
        w.add_tensor(f"blk.{i}.ffn_gate_exps.weight", weight(N_EXPERT, N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_up_exps.weight", weight(N_EXPERT, N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_down_exps.weight", weight(N_EXPERT, N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("output.weight", weight(len(tokens), N_EMBD))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _ggml_loads(path: Path) -> tuple[list[str], bool]:
    """Parse the file with ggml's own GGUF reader (as llama.cpp's imatrix loaders do): tensor names, flag."""
    lib = ggml_tensor.lib()

    class InitParams(ctypes.Structure):
        _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]

    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    for name, restype, argtypes in (
        ("gguf_init_from_file", vp, [ctypes.c_char_p, InitParams]),
        ("gguf_get_n_tensors", i64, [vp]),
        ("gguf_get_tensor_name", ctypes.c_char_p, [vp, i64]),
        ("gguf_find_key", i64, [vp, ctypes.c_char_p]),
        ("gguf_get_val_bool", ctypes.c_bool, [vp, i64]),
        ("gguf_free", None, [vp]),
    ):
        getattr(lib, name).restype, getattr(lib, name).argtypes = restype, argtypes
    ctx = ctypes.c_void_p()
    gctx = lib.gguf_init_from_file(str(path).encode(), InitParams(False, ctypes.pointer(ctx)))
    assert gctx, "ggml could not parse the imatrix file"
    try:
        names = [lib.gguf_get_tensor_name(gctx, i).decode() for i in range(lib.gguf_get_n_tensors(gctx))]
        key = lib.gguf_find_key(gctx, EXPERT_COUNTS_KEY.encode())
        flag = key >= 0 and lib.gguf_get_val_bool(gctx, key)
    finally:
        lib.gguf_free(gctx)
        lib.ggml_free(ctx)
    return names, flag


def test_moe_model_records_expert_usage(tmp_path: Path) -> None:
    model = write_tiny_moe(tmp_path / "moe.gguf")
    out = tmp_path / "moe.imatrix.gguf"
    ctx, chunks = 32, 3
    report = compute_imatrix(model, TEXT, out, ctx=ctx, max_chunks=chunks, threads=1)
    tokens = ctx * chunks
    assert report.tokens == tokens and report.experts_per_token == N_EXPERT_USED
    assert sorted(report.expert_counts) == list(range(N_LAYER))
    fields, data, shapes = _read_imatrix(out)
    assert fields[EXPERT_COUNTS_KEY] is True
    for layer, usage in report.expert_counts.items():
        assert usage.shape == (N_EXPERT,) and usage.sum() == tokens * N_EXPERT_USED
        assert np.count_nonzero(usage) >= 2  # random routing spreads over several experts
        stored = data[f"blk.{layer}.ffn_expert_counts"]
        assert stored.dtype == np.int32 and stored.tolist() == usage.tolist()
        for kind in ("gate", "up", "down"):
            name = f"blk.{layer}.ffn_{kind}_exps.weight"
            n_per_row = N_FF if kind == "down" else N_EMBD
            assert shapes[f"{name}.in_sum2"] == (n_per_row, N_EXPERT)
            assert shapes[f"{name}.counts"] == (1, N_EXPERT)
            assert data[f"{name}.counts"].ravel().tolist() == usage.astype(float).tolist()
            sums = data[f"{name}.in_sum2"]
            assert np.all(np.isfinite(sums)) and np.all(sums >= 0)
            assert np.all((sums.sum(axis=1) > 0) == (usage > 0))  # unused experts stay zero
        # gate and up read the same ffn_norm output for each (token, expert) pair
        np.testing.assert_allclose(data[f"blk.{layer}.ffn_gate_exps.weight.in_sum2"],
                                   data[f"blk.{layer}.ffn_up_exps.weight.in_sum2"], rtol=1e-6)
        assert data[f"blk.{layer}.ffn_gate_inp.weight.counts"].ravel().tolist() == [float(tokens)]
    back = read_imatrix(out)  # the project's reader skips the extra tensors too
    assert all(name.endswith(".weight") for name in back.entries)
    assert back.entries["blk.1.ffn_down_exps.weight"].counts.tolist() == report.expert_counts[1].tolist()
    names, flag = _ggml_loads(out)
    assert flag and "blk.0.ffn_expert_counts" in names
    # the extra tensors never look like imatrix entries to llama.cpp (it keys on these suffixes)
    extra = [n for n in names if not n.endswith((".in_sum2", ".counts"))]
    assert sorted(extra) == [f"blk.{i}.ffn_expert_counts" for i in range(N_LAYER)]


# --- bad input ------------------------------------------------------------------------------------

@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return write_tiny_llama(tmp_path / "tiny.gguf")


def test_text_shorter_than_one_chunk(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    with pytest.raises(EdgeAIError, match=r"only \d+ tokens but one chunk needs 256.*at least 256 tokens"):
        compute_imatrix(tiny_model, "too short", out, ctx=256)
    assert [p for p in tmp_path.iterdir() if p.name != "edge-home"] == [tiny_model]  # edge-home: the test's home


@pytest.mark.parametrize("text", ["", "  \n\t "])
def test_empty_text_is_named_as_empty(tiny_model: Path, tmp_path: Path, text: str) -> None:
    with pytest.raises(EdgeAIError, match=r"the calibration text is empty; give a text file with at least 192 words"):
        compute_imatrix(tiny_model, text, tmp_path / "out.gguf", ctx=256)
    assert list(tmp_path.iterdir()) == [tiny_model]


def test_not_a_gguf_and_truncated(model_path: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model" * 100)
    with pytest.raises(EdgeAIError, match="junk.gguf"):
        compute_imatrix(junk, TEXT, tmp_path / "a.gguf")
    truncated = tmp_path / "cut.gguf"
    with open(model_path, "rb") as f:
        truncated.write_bytes(f.read(4 << 20))
    with pytest.raises(EdgeAIError, match="truncated"):
        compute_imatrix(truncated, TEXT, tmp_path / "b.gguf")
    with pytest.raises(EdgeAIError, match="no such model file"):
        compute_imatrix(tmp_path / "missing.gguf", TEXT, tmp_path / "c.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf", "junk.gguf"]


def test_unwritable_output_and_bad_options(tiny_model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(EdgeAIError, match="cannot write"):
        compute_imatrix(tiny_model, TEXT, blocker / "out.gguf", ctx=32)
    with pytest.raises(EdgeAIError, match="is a directory"):
        compute_imatrix(tiny_model, TEXT, tmp_path, ctx=32)
    with pytest.raises(EdgeAIError, match="is the model itself"):
        compute_imatrix(tiny_model, TEXT, tiny_model, ctx=32)
    with pytest.raises(EdgeAIError, match="too small"):
        compute_imatrix(tiny_model, TEXT, tmp_path / "out.gguf", ctx=4)
    with pytest.raises(EdgeAIError, match="larger than"):
        compute_imatrix(tiny_model, TEXT, tmp_path / "out.gguf", ctx=100_000)
    with pytest.raises(EdgeAIError, match="max chunks"):
        compute_imatrix(tiny_model, TEXT, tmp_path / "out.gguf", ctx=32, max_chunks=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "tiny.gguf"]

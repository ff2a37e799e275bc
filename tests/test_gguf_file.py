"""Tests for edge_ai.gguf_file: tiny GGUF files written with gguf-py, then broken on purpose."""

from __future__ import annotations

import random
import struct
import zipfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType as T

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import ArraySummary, check_gguf, diagnose, read_gguf

N_VOCAB = 100
TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"
REMOVE = object()  # marks a metadata key to leave out


def default_metadata(n_vocab: int = N_VOCAB) -> dict[str, tuple[Any, T]]:
    return {
        "general.name": ("Tiny Test", T.STRING),
        "general.file_type": (int(gguf.LlamaFileType.ALL_F32), T.UINT32),
        "general.tags": (["a", "b"], T.ARRAY),
        "llama.context_length": (128, T.UINT32),
        "llama.embedding_length": (16, T.UINT32),
        "llama.block_count": (1, T.UINT32),
        "llama.feed_forward_length": (32, T.UINT32),
        "llama.attention.head_count": (4, T.UINT32),
        "llama.attention.head_count_kv": (2, T.UINT32),
        "llama.attention.layer_norm_rms_epsilon": (1e-5, T.FLOAT32),
        "llama.rope.freq_base": (10000.0, T.FLOAT32),
        "tokenizer.ggml.model": ("llama", T.STRING),
        "tokenizer.ggml.tokens": ([f"tok{i}" for i in range(n_vocab)], T.ARRAY),
        "tokenizer.ggml.scores": ([float(-i) for i in range(n_vocab)], T.ARRAY),
        "tokenizer.ggml.token_type": ([1] * n_vocab, T.ARRAY),
        "tokenizer.ggml.bos_token_id": (1, T.UINT32),
        "tokenizer.ggml.eos_token_id": (2, T.UINT32),
        "tokenizer.chat_template": (TEMPLATE, T.STRING),
    }


def default_tensors() -> dict[str, np.ndarray]:
    # numpy shapes are outermost-first; GGUF stores (and TensorInfo reports) them innermost-first.
    return {
        "token_embd.weight": np.ones((N_VOCAB, 16), np.float32),
        "blk.0.attn_norm.weight": np.ones(16, np.float32),
        "blk.0.attn_q.weight": np.ones((16, 16), np.float32),
        "output_norm.weight": np.ones(16, np.float32),
    }


def write_model(
    path: Path,
    changes: dict[str, Any] | None = None,
    *,
    arch: str = "llama",
    tensors: dict[str, np.ndarray] | None = None,
    n_vocab: int = N_VOCAB,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> Path:
    """Write a tiny GGUF; `changes` maps keys to (value, type) or REMOVE."""
    metadata = {**default_metadata(n_vocab), **(changes or {})}
    writer = gguf.GGUFWriter(path, arch, endianess=endianess)
    for key, change in metadata.items():
        if change is REMOVE:
            writer.kv_data[0].pop(key, None)  # also drops general.architecture, which the writer adds itself
        else:
            writer.add_key_value(key, *change)
    for name, array in (default_tensors() if tensors is None else tensors).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model.gguf")


def problem_of(path: Path) -> str:
    with pytest.raises(EdgeAIError) as excinfo:
        check_gguf(path)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- good files ----------------------------------------------------------------------------------


def test_reads_good_model(model: Path) -> None:
    info = read_gguf(model)
    assert info.path == model.resolve()
    assert info.file_size == model.stat().st_size
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.name == "Tiny Test"
    assert (info.context_length, info.block_count, info.embedding_length) == (128, 1, 16)
    assert info.chat_template == TEMPLATE
    assert info.metadata["general.tags"] == ["a", "b"]
    assert info.metadata["tokenizer.ggml.bos_token_id"] == 1
    assert info.metadata["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert info.metadata_types["llama.block_count"] == "UINT32"
    assert info.metadata_types["tokenizer.ggml.token_type"] == "ARRAY[INT32]"
    assert info.metadata["tokenizer.ggml.tokens"] == ArraySummary("STRING", N_VOCAB)
    assert info.metadata["tokenizer.ggml.scores"] == ArraySummary("FLOAT32", N_VOCAB)

    by_name = {t.name: t for t in info.tensors}
    embd = by_name["token_embd.weight"]
    assert embd.shape == (16, N_VOCAB)
    assert (embd.ggml_type, embd.nbytes) == ("F32", 16 * N_VOCAB * 4)
    assert by_name["output_norm.weight"].shape == (16,)
    assert info.parameter_count == 16 * N_VOCAB + 16 + 16 * 16 + 16
    assert info.tensor_type_counts() == {"F32": 4}
    assert info.file_type_name == "F32"
    assert info.bits_per_weight == 32.0
    assert diagnose(info) == []
    assert check_gguf(model) is info


def test_tensor_layout_matches_gguf_py(model: Path) -> None:
    info = read_gguf(model)
    reader = gguf.GGUFReader(model)
    assert info.data_offset == reader.data_offset
    expected = {t.name: (int(t.data_offset), int(t.n_bytes), t.tensor_type.name) for t in reader.tensors}
    assert {t.name: (t.offset, t.nbytes, t.ggml_type) for t in info.tensors} == expected


def test_name_falls_back_to_file_stem_and_type_to_dominant_tensor_type(tmp_path: Path) -> None:
    path = write_model(tmp_path / "my-model.gguf", {"general.name": REMOVE, "general.file_type": REMOVE})
    info = read_gguf(path)
    assert info.name == "my-model"
    assert info.file_type_name == "F32"


def test_large_token_array_is_summarised_not_materialised(tmp_path: Path) -> None:
    path = write_model(
        tmp_path / "big-vocab.gguf",
        {"tokenizer.ggml.scores": REMOVE, "tokenizer.ggml.token_type": REMOVE},
        n_vocab=262_144,
        tensors={"token_embd.weight": np.ones((4, 16), np.float32)},
    )
    info = read_gguf(path)
    assert info.metadata["tokenizer.ggml.tokens"] == ArraySummary("STRING", 262_144)


def test_cache_returns_same_result_until_file_changes(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf")
    first = read_gguf(path)
    assert read_gguf(path) is first
    assert read_gguf(tmp_path / "." / "model.gguf") is first
    renamed = "Renamed " * 10  # changes the size, whatever the mtime granularity
    write_model(path, {"general.name": (renamed, T.STRING)})
    assert read_gguf(path).name == renamed


def test_real_default_model(model_path: Path) -> None:
    info = check_gguf(model_path)
    assert info.architecture == "gemma3"
    assert info.file_type_name == "Q4_K_M"
    assert info.metadata["tokenizer.ggml.tokens"] == ArraySummary("STRING", 262_144)


# --- files that cannot be read -------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(EdgeAIError, match="no such model file"):
        read_gguf(tmp_path / "nope.gguf")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(EdgeAIError, match="is a directory"):
        read_gguf(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"")
    with pytest.raises(EdgeAIError, match="model.gguf is empty"):
        read_gguf(path)


def test_random_bytes_are_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(random.Random(0).randbytes(1000).replace(b"GGUF", b"XXXX"))
    with pytest.raises(EdgeAIError, match="model.gguf is not a GGUF file"):
        read_gguf(path)


def test_zip_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights.bin", b"\0" * 100)
    with pytest.raises(EdgeAIError, match=r"not a GGUF file \(starts with b'PK\\x03\\x04'\)"):
        read_gguf(path)


def test_big_endian_is_refused(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", endianess=gguf.GGUFEndian.BIG)
    with pytest.raises(EdgeAIError, match="big-endian"):
        read_gguf(path)


def test_header_cut_anywhere_gives_edge_ai_error(model: Path) -> None:
    data = model.read_bytes()
    header_end = read_gguf(model).data_offset
    for cut in range(4, header_end - 32, 5):  # the last bytes before data_offset are padding
        model.write_bytes(data[:cut])
        with pytest.raises(EdgeAIError, match=r"^model\.gguf is truncated or corrupt: "):
            read_gguf(model)


def test_file_cut_inside_a_metadata_array_says_truncated(model: Path) -> None:
    """The reader sees a long array that the cut file cannot hold: a truncation, said so."""
    data = model.read_bytes()
    model.write_bytes(data[: data.index(b"tok50")])
    with pytest.raises(EdgeAIError, match=r"^model\.gguf is truncated or corrupt: metadata key "
                                          r"'tokenizer\.ggml\.tokens' claims 100 items"):
        read_gguf(model)


def test_absurd_tensor_dimensions_are_named(model: Path) -> None:
    data = bytearray(model.read_bytes())
    name = b"blk.0.attn_q.weight"
    shape_at = data.index(name) + len(name) + 4  # after the name and the dimension count
    struct.pack_into("<QQ", data, shape_at, 2**40, 2**40)
    model.write_bytes(data)
    assert "tensor 'blk.0.attn_q.weight' has absurd dimensions (1099511627776, 1099511627776)" in problem_of(model)


@pytest.mark.parametrize(
    ("version", "message"), [(1, "version 1 is no longer supported"), (7, "unsupported GGUF version 7")]
)
def test_unsupported_version(model: Path, version: int, message: str) -> None:
    data = bytearray(model.read_bytes())
    struct.pack_into("<I", data, 4, version)
    model.write_bytes(data)
    with pytest.raises(EdgeAIError, match=message):
        read_gguf(model)


def test_absurd_tensor_count(model: Path) -> None:
    data = bytearray(model.read_bytes())
    struct.pack_into("<Q", data, 8, 10**12)
    model.write_bytes(data)
    with pytest.raises(EdgeAIError, match="header says 1000000000000 tensors, which cannot fit"):
        read_gguf(model)


def test_string_length_beyond_end_of_file(model: Path) -> None:
    data = bytearray(model.read_bytes())
    struct.pack_into("<Q", data, 24, 2**62)  # length of the first metadata key
    model.write_bytes(data)
    with pytest.raises(EdgeAIError, match="truncated or corrupt: the name of metadata entry #0"):
        read_gguf(model)


def test_unknown_ggml_type(model: Path) -> None:
    data = bytearray(model.read_bytes())
    name = b"output_norm.weight"
    type_at = data.index(name) + len(name) + 4 + 8  # after the name, n_dims and one dimension
    struct.pack_into("<I", data, type_at, 99)
    model.write_bytes(data)
    with pytest.raises(EdgeAIError, match="tensor 'output_norm.weight' has unknown ggml type id 99"):
        read_gguf(model)


def test_invalid_utf8_metadata(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", {"general.name": (b"\xff\xfe", T.STRING)})
    with pytest.raises(EdgeAIError, match="'general.name' is not valid UTF-8"):
        read_gguf(path)


def test_corrupted_headers_only_raise_edge_ai_error(model: Path) -> None:
    data = model.read_bytes()
    header_end = read_gguf(model).data_offset
    rng = random.Random(1234)
    for i in range(300):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(4, header_end)] = rng.randrange(256)
        path = model.with_name(f"corrupt{i}.gguf")  # a new file each time, so the cache cannot answer
        path.write_bytes(bytes(corrupt))
        try:
            diagnose(read_gguf(path))
        except EdgeAIError:
            pass


# --- files llama.cpp would fail on -----------------------------------------------------------


def test_tensor_data_cut(model: Path) -> None:
    data = model.read_bytes()
    model.write_bytes(data[: len(data) - 200])
    info = read_gguf(model)  # the header is intact, so it still reads
    assert "is truncated: tensor" in problem_of(model)
    assert any("output_norm.weight" in p or "attn_q" in p for p in diagnose(info))


def test_unknown_architecture(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", arch="notanarch")
    assert "architecture 'notanarch' is not supported" in problem_of(path)


def test_missing_architecture(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", {"general.architecture": REMOVE})
    assert "has no general.architecture" in problem_of(path)


def test_projector_is_not_a_language_model(tmp_path: Path) -> None:
    path = write_model(tmp_path / "mmproj.gguf", arch="clip")
    assert "multimodal projector" in problem_of(path)


def test_nan_epsilon(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", {"llama.attention.layer_norm_rms_epsilon": (float("nan"), T.FLOAT32)})
    assert "llama.attention.layer_norm_rms_epsilon is nan but must be finite" in problem_of(path)


def test_head_count_kv_must_divide_head_count(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", {"llama.attention.head_count_kv": (3, T.UINT32)})
    assert "head_count_kv is 3 but must divide llama.attention.head_count 4" in problem_of(path)


def test_per_layer_head_count_kv(tmp_path: Path) -> None:
    two_layers = {"llama.block_count": (2, T.UINT32)}
    good = write_model(tmp_path / "good.gguf", {**two_layers, "llama.attention.head_count_kv": ([2, 0], T.ARRAY)})
    assert diagnose(read_gguf(good)) == []
    bad = write_model(tmp_path / "bad.gguf", {**two_layers, "llama.attention.head_count_kv": ([2, 3], T.ARRAY)})
    assert "head_count_kv is 3 (layer 1)" in problem_of(bad)
    short = write_model(tmp_path / "short.gguf", {**two_layers, "llama.attention.head_count_kv": ([2], T.ARRAY)})
    assert "has 1 entries but there are 2 layers" in problem_of(short)


def test_zero_head_count_only_allowed_without_attention(tmp_path: Path) -> None:
    no_heads = {"llama.attention.head_count": (0, T.UINT32), "llama.attention.head_count_kv": (0, T.UINT32)}
    path = write_model(tmp_path / "model.gguf", no_heads)
    assert "llama.attention.head_count is 0, outside the valid range 1..1000000" in problem_of(path)
    tensors = default_tensors()
    del tensors["blk.0.attn_q.weight"]  # an attention-free (Mamba-like) model stores 0 heads
    assert diagnose(read_gguf(write_model(tmp_path / "ssm.gguf", no_heads, tensors=tensors))) == []


def test_zero_block_count(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", {"llama.block_count": (0, T.UINT32)})
    assert "llama.block_count is 0, outside the valid range 1..512" in problem_of(path)


def test_wrong_value_type(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", {"llama.block_count": (1, T.INT32)})
    assert "llama.block_count is stored as INT32 but llama.cpp needs UINT32" in problem_of(path)


def test_missing_hyperparameter(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", {"llama.embedding_length": REMOVE})
    assert "missing llama.embedding_length" in problem_of(path)


def test_eos_beyond_vocabulary(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", {"tokenizer.ggml.eos_token_id": (N_VOCAB, T.UINT32)})
    assert "tokenizer.ggml.eos_token_id is 100 but the vocabulary has only 100 tokens" in problem_of(path)


def test_missing_tokens(tmp_path: Path) -> None:
    path = write_model(tmp_path / "model.gguf", {"tokenizer.ggml.tokens": REMOVE})
    assert "has no vocabulary (tokenizer.ggml.tokens)" in problem_of(path)


def test_missing_token_embedding(tmp_path: Path) -> None:
    tensors = default_tensors()
    del tensors["token_embd.weight"]
    path = write_model(tmp_path / "model.gguf", tensors=tensors)
    assert "has no token_embd.weight tensor" in problem_of(path)


def test_duplicate_tensor_names(tmp_path: Path) -> None:
    extra = {"blk.0.aaa.weight": np.ones(16, np.float32), "blk.0.bbb.weight": np.ones(16, np.float32)}
    tensors = {**default_tensors(), **extra}
    path = write_model(tmp_path / "model.gguf", tensors=tensors)
    path.write_bytes(path.read_bytes().replace(b"blk.0.bbb.weight", b"blk.0.aaa.weight"))
    assert "tensor 'blk.0.aaa.weight' appears 2 times" in problem_of(path)


def test_empty_tensor_dimension(tmp_path: Path) -> None:
    tensors = {**default_tensors(), "blk.0.ffn_up.weight": np.ones((0, 16), np.float32)}
    path = write_model(tmp_path / "model.gguf", tensors=tensors)
    assert "'blk.0.ffn_up.weight' has shape (16, 0) with an empty dimension" in problem_of(path)


def test_several_problems_are_counted(tmp_path: Path) -> None:
    path = write_model(
        tmp_path / "model.gguf",
        {"llama.block_count": (0, T.UINT32), "tokenizer.ggml.eos_token_id": (N_VOCAB, T.UINT32)},
    )
    assert len(diagnose(read_gguf(path))) == 2
    assert problem_of(path).endswith("(+1 more)")

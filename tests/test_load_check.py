"""No model file can kill the process: real llama.cpp, real child processes, real aborts.

The malformed files are the tiny llama of tests/tiny_gguf.py with one hyperparameter broken. Loaded
without our validation they abort llama.cpp with SIGABRT; through `runtime.llamacpp.load` that abort happens in
a child process and comes back as one line quoting the assertion, while this process goes on.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGUFValueType as T
from tiny_gguf import N_LAYER, vocabulary, write_tiny_llama

from edge_ai import registry
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import diagnose, read_gguf
from runtime.llamacpp import load as load_check
from runtime.llm.engine import Engine, EngineOptions

PARAMS = {"n_ctx": 256, "n_batch": 64, "n_ubatch": 64, "n_threads": 1, "n_threads_batch": 1}
CRASH = r"^llama\.cpp crashed loading model\.gguf \(signal 6\): llama-model\.cpp:\d+: "

# the three aborts of the first issue's known traps: (metadata, the assertion llama.cpp prints)
ABORTS = {
    "experts on a dense model": ({"llama.expert_used_count": 2},
                                 "GGML_ASSERT(n_expert_used_max <= hparams.n_expert) failed"),
    "nextn beyond the layers": ({"llama.nextn_predict_layers": N_LAYER + 1},
                                "GGML_ASSERT(hparams.n_layer_nextn <= hparams.n_layer_all) failed"),
    "unknown rope scaling": ({"llama.rope.scaling.type": "bogus"},
                             "GGML_ASSERT(hparams.rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED) "
                             "failed"),
}


def write_duplicate_token_model(path: Path) -> Path:
    """The tiny model with one token twice in its vocabulary: no header check reads the whole token
    list, and llama.cpp's vocab loader asserts on it (llama-vocab.cpp)."""
    tokens = vocabulary()[0]
    tokens[-4] = tokens[-5]
    return write_tiny_llama(path, extra_metadata={"tokenizer.ggml.tokens": (tokens, T.ARRAY, T.STRING)})


@pytest.mark.parametrize("case", ABORTS)
def test_a_native_abort_is_one_line_quoting_the_assertion(tmp_path: Path, case: str) -> None:
    """load_check loads the file as llama.cpp would, without our validation in front of it."""
    metadata, assertion = ABORTS[case]
    path = write_tiny_llama(tmp_path / "model.gguf", extra_metadata=metadata)
    with pytest.raises(EdgeAIError, match=CRASH) as excinfo:
        load_check.ensure_loads(path, PARAMS)
    message = str(excinfo.value)
    assert assertion in message and "\n" not in message
    assert not registry.loads_fine(path)


def test_the_engine_survives_an_abort_no_rule_catches(tmp_path: Path) -> None:
    """A file that passes every header check and still aborts llama.cpp: the engine reports it in
    one line, remembers nothing, and this process goes on to load a good model."""
    bad = write_duplicate_token_model(tmp_path / "model.gguf")
    assert diagnose(read_gguf(bad)) == []
    options = EngineOptions(context=256, threads=1, batch=64)
    assertion = r"llama-vocab\.cpp:\d+: GGML_ASSERT\(id_to_token\.size\(\) == token_to_id\.size\(\)\) failed; "
    with pytest.raises(EdgeAIError, match=r"^llama\.cpp crashed loading model\.gguf \(signal 6\): " + assertion):
        Engine(bad, options=options)
    assert not registry.loads_fine(bad)
    Engine(write_tiny_llama(tmp_path / "good.gguf"), options=options).close()


def test_edge_ai_ask_reports_the_crash_in_one_line(tmp_path: Path) -> None:
    bad = write_duplicate_token_model(tmp_path / "model.gguf")
    result = _edge_ai("ask", "-m", str(bad), "hi")
    assert result.returncode == 4 and result.stdout == ""  # ModelLoadError's exit code
    assert result.stderr.startswith("error: llama.cpp crashed loading model.gguf (signal 6): llama-vocab.cpp:")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [
    ["eval", "--ctx", "16"],
    ["imatrix", "--ctx", "16", "-o", "{out}"],
    ["quantize", "-q", "Q8_0"],
])
def test_every_toolchain_command_reports_the_crash_in_one_line(tmp_path: Path, command: list[str]) -> None:
    """eval, imatrix and quantize load the model through the same child-process check as the engine."""
    bad = write_duplicate_token_model(tmp_path / "model.gguf")
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 50)
    name, *options = command
    args = [name, str(bad), *(o.format(out=tmp_path / "out.gguf") for o in options)]
    if name == "quantize":
        args.append(str(tmp_path / "out.gguf"))
    else:
        args += ["--text", str(text)]
    result = _edge_ai(*args)
    assert result.returncode == 4, result.stderr  # ModelLoadError's exit code, not a signal
    assert result.stderr.startswith("error: llama.cpp crashed loading model.gguf (signal 6): llama-vocab.cpp:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.gguf").exists()


def test_a_file_that_loaded_is_not_loaded_twice_until_it_changes(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "good.gguf")
    assert not registry.loads_fine(path)
    Engine(path, options=EngineOptions(context=256, threads=1, batch=64)).close()
    assert registry.loads_fine(path)
    cache = json.loads((registry.get_paths().data_dir / "loads-fine.json").read_text())
    stat = path.stat()
    assert cache == {str(path.resolve()): [stat.st_size, stat.st_mtime_ns]}
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same bytes, newer file
    assert not registry.loads_fine(path)


def test_an_error_llama_cpp_only_logs_is_shown(tmp_path: Path) -> None:
    """A missing tensor passes our header checks; llama.cpp says which one only in its log."""
    path = write_tiny_llama(tmp_path / "model.gguf", leave_out={"blk.1.ffn_down.weight"})
    options = EngineOptions(context=256, threads=1, batch=64)
    with pytest.raises(EdgeAIError) as child:
        Engine(path, options=options)
    assert str(child.value).startswith("llama.cpp could not load model.gguf: ")
    assert "tensor 'blk.1.ffn_down.weight' not found" in str(child.value)
    # the same failure in this process (a file that loaded before, e.g. with other settings)
    registry.remember_loads_fine(path)
    with pytest.raises(EdgeAIError) as parent:
        Engine(path, options=options)
    assert "tensor 'blk.1.ffn_down.weight' not found" in str(parent.value)
    assert "see the log" not in str(parent.value)


def test_crash_message_when_the_child_is_killed_without_an_assertion(tmp_path: Path) -> None:
    assert load_check.failure_message(tmp_path / "m.gguf", -9, "").startswith(
        "llama.cpp crashed loading m.gguf (signal 9): SIGKILL;")


def _edge_ai(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())


def test_models_info_on_a_truncated_file_warns_and_fails(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "model.gguf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    for args in ([], ["--json"]):
        result = _edge_ai("models", "info", str(path), *args)
        assert result.returncode == 1
        warnings = result.stderr.strip().splitlines()
        assert warnings and all(w.startswith("warning: model.gguf") for w in warnings)
        assert "is truncated: tensor" in warnings[0] and "Traceback" not in result.stderr
    assert _edge_ai("models", "info", str(write_tiny_llama(tmp_path / "good.gguf"))).returncode == 0


def test_models_info_on_a_tensor_with_absurd_dimensions_warns_and_fails(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "model.gguf")
    data = bytearray(path.read_bytes())
    name = b"blk.0.attn_q.weight"
    struct.pack_into("<QQ", data, data.index(name) + len(name) + 4, 2**40, 2**40)  # after name and n_dims
    path.write_bytes(data)
    result = _edge_ai("models", "info", str(path))
    assert result.returncode == 1
    assert "warning: model.gguf: tensor 'blk.0.attn_q.weight' has absurd dimensions" in result.stderr


def test_models_info_on_a_file_cut_inside_its_metadata(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "model.gguf")
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"tokenizer.ggml.merges")])
    result = _edge_ai("models", "info", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: model.gguf is truncated or corrupt: ")
    assert len(result.stderr.strip().splitlines()) == 1


_EDGE_KEYS = ("llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
              "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count",
              "llama.attention.key_length", "llama.attention.value_length", "llama.attention.sliding_window",
              "llama.expert_count", "llama.expert_used_count", "llama.expert_group_count",
              "llama.nextn_predict_layers", "llama.vocab_size", "tokenizer.ggml.bos_token_id")


@pytest.mark.slow
@pytest.mark.parametrize("value", [0, 1, 2**31 - 1, 2**32 - 1])
def test_no_hyperparameter_at_an_edge_of_its_type_crashes_llama_cpp(tmp_path: Path, value: int) -> None:
    """Each integer hyperparameter at 0, 1, int32 max and uint32 max: refused by name, or loaded
    (or refused by llama.cpp) without an abort. Found the MoE file with no expert_used_count."""
    for key in _EDGE_KEYS:
        path = write_tiny_llama(tmp_path / f"{key}.gguf", extra_metadata={key: value})
        problems = diagnose(read_gguf(path))
        if problems:
            assert any(key in p for p in problems), (key, problems)
            continue
        try:
            load_check.ensure_loads(path, PARAMS)
        except EdgeAIError as exc:
            assert not str(exc).startswith("llama.cpp crashed"), (key, value, str(exc))

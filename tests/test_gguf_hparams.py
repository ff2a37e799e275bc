"""Hyperparameters llama.cpp asserts on are refused by name, with their value and valid range.

The files are the tiny llama model of tests/tiny_gguf.py with one hyperparameter broken; that the
broken ones really abort llama.cpp is shown in test_load_check.py.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from gguf import GGUFValueType as T
from tiny_gguf import N_LAYER, write_tiny_llama

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import check_gguf, diagnose, read_gguf
from edge_ai.gguf_hparams import hyperparameter_problems

UINT32_MAX = 2**32 - 1

# (extra metadata, what the refusal must say): every GGML_ASSERT of load_hparams a file can reach
REFUSED: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "experts on a dense model": ({"llama.expert_used_count": 2},
                                 ("llama.expert_used_count is 2", "valid range 0..0", "llama.expert_count is 0")),
    "nextn beyond the layers": ({"llama.nextn_predict_layers": N_LAYER + 1},
                                (f"llama.nextn_predict_layers is {N_LAYER + 1}", f"valid range 0..{N_LAYER}",
                                 "llama.block_count")),
    "unknown rope scaling": ({"llama.rope.scaling.type": "bogus"},
                             ("llama.rope.scaling.type is 'bogus'", "'none', 'linear', 'yarn', 'longrope'")),
    "too many experts": ({"llama.expert_count": 2000, "llama.expert_used_count": 2},
                         ("llama.expert_count is 2000", "valid range 0..1024")),
    "more experts used than exist": ({"llama.expert_count": 4, "llama.expert_used_count": 5},
                                     ("llama.expert_used_count is 5", "valid range 1..4")),
    "no expert used in a MoE": ({"llama.expert_count": 4, "llama.expert_used_count": 0},
                                ("llama.expert_used_count is 0", "valid range 1..4")),
    "experts but no used count": ({"llama.expert_count": 1}, ("missing llama.expert_used_count",)),
    "one layer uses too many experts": ({"llama.expert_count": 4, "llama.expert_used_count": [2, 6]},
                                        ("llama.expert_used_count is 6", "valid range 1..4")),
    "expert groups on a dense model": ({"llama.expert_group_count": 2},
                                       ("llama.expert_group_count is 2", "valid range 0..0")),
    "as many groups as experts": ({"llama.expert_count": 4, "llama.expert_used_count": 2,
                                   "llama.expert_group_count": 4},
                                  ("llama.expert_group_count is 4", "valid range 0..3")),
    "groups not dividing experts": ({"llama.expert_count": 8, "llama.expert_used_count": 2,
                                     "llama.expert_group_count": 3, "llama.expert_group_used_count": 1},
                                    ("llama.expert_group_count is 3 but must divide llama.expert_count = 8",)),
    "no group used": ({"llama.expert_count": 8, "llama.expert_used_count": 2, "llama.expert_group_count": 4},
                      ("missing llama.expert_group_used_count",)),
    "all groups used": ({"llama.expert_count": 8, "llama.expert_used_count": 2, "llama.expert_group_count": 4,
                         "llama.expert_group_used_count": 4},
                        ("llama.expert_group_used_count is 4", "valid range 1..3")),
    "too many layers": ({"llama.block_count": 513}, ("llama.block_count is 513", "valid range 1..512")),
}


@pytest.mark.parametrize("case", REFUSED)
def test_each_assertion_of_load_hparams_is_refused_by_name(tmp_path: Path, case: str) -> None:
    metadata, needles = REFUSED[case]
    path = write_tiny_llama(tmp_path / "model.gguf", extra_metadata=metadata)
    with pytest.raises(EdgeAIError) as excinfo:
        check_gguf(path)
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith("model.gguf")
    for needle in needles:
        assert needle in message


def test_valid_mixtures_of_experts_and_rope_scaling_pass(tmp_path: Path) -> None:
    metadata = {"llama.expert_count": 8, "llama.expert_used_count": [2, 1], "llama.expert_group_count": 4,
                "llama.expert_group_used_count": 2, "llama.nextn_predict_layers": N_LAYER,
                "llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}
    assert diagnose(read_gguf(write_tiny_llama(tmp_path / "moe.gguf", extra_metadata=metadata))) == []


def test_architecture_specific_assertions(tmp_path: Path) -> None:
    """gemma-embedding's dense projections must match n_embd; the rule does not apply to llama."""
    path = write_tiny_llama(tmp_path / "model.gguf", extra_metadata={"llama.dense_2_feat_in": 7})
    info = read_gguf(path)
    assert diagnose(info) == []
    as_gemma = dataclasses.replace(  # the same header, read as the architecture the rule belongs to
        info, metadata={k.replace("llama.", "gemma-embedding."): v for k, v in info.metadata.items()},
        metadata_types={k.replace("llama.", "gemma-embedding."): v for k, v in info.metadata_types.items()})
    assert ("model.gguf: gemma-embedding.dense_2_feat_in is 7 but must be one of: 0, "
            "gemma-embedding.embedding_length = 64; re-convert the model with a current llama.cpp"
            in hyperparameter_problems(as_gemma, "gemma-embedding"))


# every integer hyperparameter of the tiny model, at the edges of uint32
_INTEGER_KEYS = ("llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                 "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count",
                 "llama.vocab_size", "llama.expert_count", "llama.nextn_predict_layers")


@pytest.mark.parametrize("key", _INTEGER_KEYS)
@pytest.mark.parametrize("value", [UINT32_MAX, 2**31])
def test_integers_beyond_int32_are_refused_by_name(tmp_path: Path, key: str, value: int) -> None:
    """llama.h hands these to Python as int32: 2**32-1 would arrive as -1, a negative size."""
    path = write_tiny_llama(tmp_path / "model.gguf", extra_metadata={key: (value, T.UINT32)})
    problems = diagnose(read_gguf(path))
    assert any(f"{key} is {value}, outside the valid range" in p for p in problems), problems


@pytest.mark.parametrize("key", ["llama.context_length", "llama.embedding_length", "llama.block_count",
                                 "llama.attention.head_count", "llama.attention.head_count_kv",
                                 "llama.feed_forward_length"])
def test_zero_sizes_are_refused_by_name(tmp_path: Path, key: str) -> None:
    path = write_tiny_llama(tmp_path / "model.gguf", extra_metadata={key: 0})
    problems = diagnose(read_gguf(path))
    assert any(f"{key} is 0" in p for p in problems), problems


@pytest.mark.parametrize("key", ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
                                 "llama.rope.scaling.factor", "llama.rope.scaling.attn_factor",
                                 "llama.attn_logit_softcapping"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_by_name(tmp_path: Path, key: str, value: float) -> None:
    path = write_tiny_llama(tmp_path / "model.gguf", extra_metadata={key: value})
    problems = diagnose(read_gguf(path))
    assert [p for p in problems if key in p] == [f"model.gguf: {key} is {value} but must be finite; "
                                                 "re-convert the model with a current llama.cpp"]


def test_wrong_type_for_a_ruled_key_is_named(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "model.gguf", extra_metadata={"llama.nextn_predict_layers": (1.5, T.FLOAT32)})
    assert "llama.nextn_predict_layers is stored as FLOAT32 but llama.cpp needs UINT32" in diagnose(read_gguf(path))[0]

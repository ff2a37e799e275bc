"""The architecture framework: registry, hparams, transforms and the MoE/fused-tensor hooks."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.constants import MODEL_ARCH
from gguf.constants import MODEL_TENSOR as T

from convert.gguf import (
    SUPPORTED_ARCHITECTURES,
    Architecture,
    convert_checkpoint,
    find_architecture,
    register,
    registry,
)
from convert.gguf.archs.llama import llama3_rope_freqs
from convert.gguf.checkpoint import SourceTensor
from convert.gguf.hparams import DECODER_HPARAMS, ModelConfig
from convert.gguf.tensors import VirtualTensor, permute_rope, rename, split_tensor, stack_experts
from edge_ai.errors import EdgeAIError


def test_supported_architectures() -> None:
    assert set(SUPPORTED_ARCHITECTURES) >= {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                            "Qwen3ForCausalLM", "Phi3ForCausalLM"}
    arch, name = find_architecture({"architectures": ["MistralForCausalLM"]})
    assert (arch.name, name) == ("llama", "MistralForCausalLM")
    assert find_architecture({"architectures": ["Other"], "model_type": "qwen3"})[0].name == "qwen3"


def test_register_is_data_and_refuses_clashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_BY_HF_ARCH", dict(registry._BY_HF_ARCH))
    monkeypatch.setattr(registry, "_BY_MODEL_TYPE", dict(registry._BY_MODEL_TYPE))
    arch = register(Architecture(gguf_arch=MODEL_ARCH.QWEN2, hf_architectures=("TinyTestForCausalLM",)))
    assert find_architecture({"architectures": ["TinyTestForCausalLM"]}) == (arch, "TinyTestForCausalLM")
    assert "TinyTestForCausalLM" in registry.supported_architectures()
    with pytest.raises(ValueError, match="registered twice"):
        register(Architecture(gguf_arch=MODEL_ARCH.LLAMA, hf_architectures=("TinyTestForCausalLM",)))
    with pytest.raises(TypeError):  # frozen: modules cannot mutate each other's records
        arch.transforms[T.ATTN_Q] = None  # type: ignore[index]


def test_hparams_from_transformers_4_and_5_configs() -> None:
    v4 = ModelConfig({"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 500000.0,
                      "rope_scaling": {"type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64}})
    v5 = ModelConfig({"hidden_size": 64, "num_attention_heads": 4,
                      "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                          "original_max_position_embeddings": 64}})
    for c in (v4, v5):
        assert c.rope_theta == 500000.0 and c.rope["rope_type"] == "llama3" and c.head_dim == 16
    (_, a), (_, b) = llama3_rope_freqs(v4)[0], llama3_rope_freqs(v5)[0]
    assert np.array_equal(a, b) and a.shape == (8,)
    assert a[0] == 1.0 and a[-1] == 8.0 and ((a > 1) & (a < 8)).any()  # all three bands

    multimodal = ModelConfig({"architectures": ["X"], "text_config": {"hidden_size": 32, "num_attention_heads": 2}})
    assert multimodal.n_embd == 32


def test_hparam_errors_are_one_line() -> None:
    config = ModelConfig({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                          "intermediate_size": 128, "vocab_size": 10, "max_position_embeddings": 64})
    eps = next(h for h in DECODER_HPARAMS if "rms_epsilon" in h.key)
    with pytest.raises(EdgeAIError, match=r"config\.json has no rms_norm_eps / layer_norm_epsilon"):
        eps.value(config)
    bad = ModelConfig({"hidden_size": "64"})
    with pytest.raises(EdgeAIError, match=r"hidden_size is '64', expected a positive integer"):
        _ = bad.n_embd


def test_permute_rope_matches_llama_cpp_layout() -> None:
    n_head, head_dim, n_embd = 2, 8, 3
    w = np.arange(n_head * head_dim * n_embd, dtype=np.float32).reshape(n_head * head_dim, n_embd)
    config = ModelConfig({"num_attention_heads": n_head})
    out = permute_rope("n_head")(w.copy(), config)
    half = head_dim // 2
    for h in range(n_head):
        for i in range(half):  # HF rotate-half pairs (i, i + d/2) become adjacent rows (2i, 2i + 1)
            assert np.array_equal(out[h * head_dim + 2 * i], w[h * head_dim + i])
            assert np.array_equal(out[h * head_dim + 2 * i + 1], w[h * head_dim + half + i])
    bias = np.arange(n_head * head_dim, dtype=np.float32)
    assert np.array_equal(permute_rope("n_head")(bias.copy(), config), out[:, 0] / n_embd)


def _source(name: str, data: np.ndarray, order: int) -> VirtualTensor:
    dtype = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}[data.dtype]
    return VirtualTensor.of(SourceTensor(name=name, shape=data.shape, dtype=dtype, file=Path("model.safetensors"),
                                         shard_index=0, order=order, _loader=lambda: data.copy()))


def test_stack_experts_builds_3d_tensors_llama_cpp_names() -> None:
    n_expert, ff, embd = 3, 4, 6
    rng = np.random.default_rng(0)
    experts = {f"model.layers.0.mlp.experts.{x}.{p}.weight": rng.standard_normal((ff, embd) if p != "down_proj"
                                                                                    else (embd, ff)).astype(np.float32)
               for x in range(n_expert) for p in ("gate_proj", "up_proj", "down_proj")}
    tensors = {n: _source(n, d, i) for i, (n, d) in enumerate(experts.items())}
    tensors["model.layers.0.mlp.gate.weight"] = _source("model.layers.0.mlp.gate.weight",
                                                        np.zeros((n_expert, embd), np.float32), 99)
    config = ModelConfig({"num_experts": n_expert})
    out = stack_experts()(tensors, config)
    assert set(out) == {"model.layers.0.mlp.experts.gate_proj.weight", "model.layers.0.mlp.experts.up_proj.weight",
                        "model.layers.0.mlp.experts.down_proj.weight", "model.layers.0.mlp.gate.weight"}
    down = out["model.layers.0.mlp.experts.down_proj.weight"]
    assert down.shape == (n_expert, embd, ff) and len(down.sources) == n_expert
    built = down.build()
    for x in range(n_expert):
        assert np.array_equal(built[x], experts[f"model.layers.0.mlp.experts.{x}.down_proj.weight"])
    name_map = gguf.get_tensor_name_map(MODEL_ARCH.QWEN2MOE, 1)
    assert name_map.get_type_and_name(down.name, try_suffixes=(".weight",)) == (T.FFN_DOWN_EXP,
                                                                                 "blk.0.ffn_down_exps.weight")

    # f16 experts are stacked as f16 (no float32 copy of the whole stack)
    half = {n: _source(n, d.astype(np.float16), i) for i, (n, d) in enumerate(experts.items())}
    raw, dtype = stack_experts()(half, config)["model.layers.0.mlp.experts.gate_proj.weight"].load()
    assert dtype == "F16" and raw.dtype == np.float16 and raw.shape == (n_expert, ff, embd)

    del tensors["model.layers.0.mlp.experts.1.up_proj.weight"]
    with pytest.raises(EdgeAIError, match=r"expert 1 of model\.layers\.0\.mlp\.experts\.up_proj\.weight is missing"):
        stack_experts()(tensors, config)


def test_split_tensor_cuts_fused_parts() -> None:
    fused = np.arange(2 * 8 * 3, dtype=np.float32).reshape(2, 8, 3)  # (experts, 2 x ff, embd)
    tensors = {"m.experts.gate_up_proj": _source("m.experts.gate_up_proj", fused, 0)}
    out = split_tensor("experts.gate_up_proj", ("experts.gate_proj.weight", "experts.up_proj.weight"), axis=1)(
        tensors, ModelConfig({}))
    assert out["m.experts.gate_proj.weight"].shape == (2, 4, 3)
    assert np.array_equal(out["m.experts.gate_proj.weight"].build(), fused[:, :4])
    assert np.array_equal(out["m.experts.up_proj.weight"].build(), fused[:, 4:])


def test_split_tensor_reads_each_part_from_the_file(tmp_path: Path) -> None:
    """Parts of a fused checkpoint tensor are read straight from their byte ranges (safetensors and
    pickle), never through the whole tensor, and come out exactly like numpy slices of it."""
    import torch
    from safetensors.torch import save_file

    from convert.gguf.checkpoint import open_checkpoint

    rng = np.random.default_rng(0)
    fused = torch.from_numpy(rng.standard_normal((3, 8, 5)).astype(np.float32)).to(torch.bfloat16)
    half = torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float16))
    want_fused = fused.view(torch.int16).numpy().view(np.uint16)
    for fmt in ("safetensors", "pickle"):
        root = tmp_path / fmt
        root.mkdir()
        (root / "config.json").write_text("{}")
        state = {"m.experts.gate_up_proj": fused, "m.other": half}
        if fmt == "safetensors":
            save_file(state, str(root / "model.safetensors"))
        else:
            torch.save(state, root / "pytorch_model.bin")
        checkpoint = open_checkpoint(root, allow_pickle=True)
        assert checkpoint.format == fmt
        source = checkpoint.tensors["m.experts.gate_up_proj"]
        for axis in range(3):
            for start, length in ((0, 1), (1, fused.shape[axis] - 1), (fused.shape[axis], 0)):
                part = source.load_slice(axis, start, length)
                want = np.take(want_fused, range(start, start + length), axis=axis)
                assert part.dtype == np.uint16 and part.flags.c_contiguous and np.array_equal(part, want)
        other = checkpoint.tensors["m.other"].load_slice(1, 2, 3)
        assert other.dtype == np.float16 and np.array_equal(other, half.numpy()[:, 2:5])

        tensors = {name: VirtualTensor.of(t) for name, t in checkpoint.tensors.items()}
        out = split_tensor("experts.gate_up_proj", ("experts.gate_proj.weight", "experts.up_proj.weight"),
                           axis=1)(tensors, ModelConfig({}))
        gate, dtype = out["m.experts.gate_proj.weight"].load()
        assert dtype == "BF16" and np.array_equal(gate, want_fused[:, :4])
        assert np.array_equal(out["m.experts.up_proj.weight"].build(), fused.float().numpy()[:, 4:])


def test_transformers_5_style_config_converts_the_same(checkpoint_copy, tmp_path: Path) -> None:
    """The toolchain's transformers (4.57) saves `rope_theta` + `rope_scaling`; checkpoints saved by
    transformers 5 have `rope_parameters` instead: both convert to the same GGUF."""
    src = checkpoint_copy("llama")
    old = convert_checkpoint(src, tmp_path / "v4.gguf", outtype="f32")
    config = json.loads((src / "config.json").read_text())
    scaling = config.pop("rope_scaling")
    kind = scaling.pop("rope_type", None) or scaling.pop("type")
    scaling.pop("type", None)
    config["rope_parameters"] = {"rope_type": kind, "rope_theta": config.pop("rope_theta"), **scaling}
    (src / "config.json").write_text(json.dumps(config))
    new = convert_checkpoint(src, tmp_path / "v5.gguf", outtype="f32")
    a, b = gguf.GGUFReader(new.output), gguf.GGUFReader(old.output)
    assert a.get_field("llama.rope.freq_base").contents() == 500000.0
    assert len(a.tensors) == len(b.tensors)
    for x, y in zip(a.tensors, b.tensors, strict=True):
        assert x.name == y.name and np.array_equal(x.data, y.data)


def test_rename_strips_prefixes_and_refuses_collisions() -> None:
    a = np.zeros(2, np.float32)
    tensors = {"language_model.model.norm.weight": _source("language_model.model.norm.weight", a, 0),
               "vision_tower.x.weight": _source("vision_tower.x.weight", a, 1)}
    out = rename(r"^language_model\.", "")(tensors, ModelConfig({}))
    assert set(out) == {"model.norm.weight", "vision_tower.x.weight"}
    assert out["model.norm.weight"].name == "model.norm.weight"
    tensors["model.norm.weight"] = _source("model.norm.weight", a, 2)
    with pytest.raises(EdgeAIError, match="both become model.norm.weight"):
        rename(r"^language_model\.", "")(tensors, ModelConfig({}))

"""Output types (f16 / bf16 / q8_0), bf16 sources, progress and streaming order (pickle sources: test_toolchain_cli).

Tolerances against transformers float32 (tiny random llama, every position), with what they reach:
f16 <= 5e-3 (~7e-4), bf16 <= 2e-2 (~6e-3), q8_0 <= 6e-2 (~2e-2, top-1 agreement >= 0.9).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from tiny_hf import TEXTS, build_checkpoint, llama_logits, load_llama, relative_error

from convert.gguf import convert_checkpoint
from edge_ai.errors import EdgeAIError

pytestmark = pytest.mark.slow

PROMPT = TEXTS[0] + " " + TEXTS[8] + " " + TEXTS[5]
TOLERANCE = {"f16": 5e-3, "bf16": 2e-2, "q8_0": 6e-2}


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_outtype_logits_close_to_transformers(tiny_checkpoint, tmp_path: Path, outtype: str) -> None:
    ckpt = tiny_checkpoint("llama")
    report = convert_checkpoint(ckpt.path, tmp_path, outtype=outtype)
    assert report.output == tmp_path / f"llama-{outtype}.gguf" and report.outtype == outtype
    ids = ckpt.encode(PROMPT)
    want = ckpt.model(ids)
    llm = load_llama(report.output)
    try:
        got = llama_logits(llm, ids)
    finally:
        llm.close()
    err = relative_error(got, want)
    agree = float((got.argmax(-1) == want.argmax(-1)).mean())
    print(f"{outtype}: max relative logit error {err:.2e}, top-1 agreement {agree:.3f}")
    assert err <= TOLERANCE[outtype]
    assert agree >= 0.9

    reader = gguf.GGUFReader(report.output)
    types = {t.name: t.tensor_type for t in reader.tensors}
    wanted = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[outtype]
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == types["output.weight"] == wanted
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == types["rope_freqs.weight"] == Q.F32


def test_q8_0_keeps_rows_not_divisible_by_32_in_f16(tmp_path: Path) -> None:
    ckpt = build_checkpoint("qwen2", tmp_path / "odd", intermediate_size=48)
    report = convert_checkpoint(ckpt.path, tmp_path / "odd.gguf", outtype="q8_0")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(report.output).tensors}
    assert types["blk.0.ffn_down.weight"] == Q.F16  # rows of 48
    assert types["blk.0.ffn_up.weight"] == Q.Q8_0  # rows of 64
    assert types["blk.0.attn_q.bias"] == Q.F32
    assert any("multiple of 32" in w for w in report.warnings)
    llm = load_llama(report.output)
    ids = ckpt.encode(PROMPT)
    try:
        assert relative_error(llama_logits(llm, ids), ckpt.model(ids)) <= TOLERANCE["q8_0"]
    finally:
        llm.close()


def _spike_ffn_down(src: Path) -> None:
    """Put a value beyond float16's range (fine in bf16 and f32) into blk.0's ffn_down, in place."""
    import json

    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file as save_torch

    name = "model.layers.0.mlp.down_proj.weight"
    shard = src / json.loads((src / "model.safetensors.index.json").read_text())["weight_map"][name]
    tensors = load_torch(shard)
    tensors[name][0, 0] = 1e5
    save_torch(tensors, shard, metadata={"format": "pt"})


def test_q8_0_fallback_of_a_bf16_checkpoint_stays_bf16_and_exact(tmp_path: Path) -> None:
    """Rows Q8_0 cannot hold fall back to BF16 when that is how they are stored: exact, and values beyond
    float16's range (which F16 would turn into inf) convert."""
    from safetensors import safe_open

    ckpt = build_checkpoint("qwen2", tmp_path / "odd", intermediate_size=48, dtype="bfloat16")
    _spike_ffn_down(ckpt.path)
    report = convert_checkpoint(ckpt.path, tmp_path / "odd.gguf", outtype="q8_0")
    tensors = {t.name: t for t in gguf.GGUFReader(report.output).tensors}
    assert tensors["blk.0.ffn_down.weight"].tensor_type == Q.BF16 and tensors["blk.0.ffn_up.weight"].tensor_type == Q.Q8_0
    assert any("stay 16-bit (e.g. blk.0.ffn_down.weight as BF16)" in w for w in report.warnings), report.warnings
    name = "model.layers.0.mlp.down_proj.weight"
    for shard in ckpt.path.glob("model-*.safetensors"):
        with safe_open(shard, "pt") as f:
            if name in f.keys():
                want = f.get_tensor(name).view(torch.int16).numpy().view(np.uint16)
    got = np.asarray(tensors["blk.0.ffn_down.weight"].data).view(np.uint16).reshape(want.shape)
    assert np.array_equal(got, want)


def test_q8_0_fallback_overflow_says_why_it_is_f16(tmp_path: Path) -> None:
    ckpt = build_checkpoint("qwen2", tmp_path / "odd", intermediate_size=48)  # float32: falls back to F16
    _spike_ffn_down(ckpt.path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EdgeAIError) as info:
        convert_checkpoint(ckpt.path, out / "odd.gguf", outtype="q8_0")
    assert str(info.value) == ("tensor blk.0.ffn_down.weight stays F16 in a q8_0 conversion (its rows of 48 values "
                               "do not divide into Q8_0's 32-value blocks) but has values up to 1e+05, beyond "
                               "float16's range (±65504); convert with --outtype bf16 or f32")
    assert list(out.iterdir()) == []


def test_bf16_checkpoint_converts_exactly(tmp_path: Path) -> None:
    ckpt = build_checkpoint("llama", tmp_path / "bf16", dtype="bfloat16", seed=3)
    report = convert_checkpoint(ckpt.path, tmp_path / "bf16.gguf", outtype="f32")
    tensors = {t.name: t for t in gguf.GGUFReader(report.output).tensors}
    from safetensors import safe_open

    for shard in sorted(ckpt.path.glob("model-*.safetensors")):
        with safe_open(shard, framework="pt") as f:
            if "model.layers.1.post_attention_layernorm.weight" in f.keys():
                want = f.get_tensor("model.layers.1.post_attention_layernorm.weight").float().numpy()
                assert np.array_equal(tensors["blk.1.ffn_norm.weight"].data, want)
    ids = ckpt.encode(PROMPT)
    llm = load_llama(report.output)
    try:
        assert relative_error(llama_logits(llm, ids), ckpt.model(ids)) <= 1e-3
    finally:
        llm.close()

    # bf16 -> bf16 copies the stored bits; Q/K are permuted without leaving bf16
    same = convert_checkpoint(ckpt.path, tmp_path / "same.gguf", outtype="bf16")
    bits = {t.name: np.asarray(t.data).view(np.uint16).reshape(-1) for t in gguf.GGUFReader(same.output).tensors}
    f32 = {name: np.asarray(t.data).reshape(-1) for name, t in tensors.items()}
    for name in ("blk.0.ffn_down.weight", "blk.1.attn_q.weight", "token_embd.weight"):
        assert np.array_equal((bits[name].astype(np.uint32) << 16).view(np.float32), f32[name]), name


def test_progress_is_monotonic_and_tensors_stream_in_shard_order(tiny_checkpoint, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from convert.gguf import checkpoint as ckpt_module

    ckpt = tiny_checkpoint("phi3")
    reads: list[str] = []
    original = ckpt_module._safetensors_loader

    def spy(path, name, *args):
        load = original(path, name, *args)

        def wrapped():
            reads.append(path.name)
            return load()
        return wrapped

    monkeypatch.setattr(ckpt_module, "_safetensors_loader", spy)
    calls: list[tuple[int, int]] = []
    report = convert_checkpoint(ckpt.path, tmp_path / "p.gguf", progress=lambda d, t: calls.append((d, t)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert all(a[0] <= b[0] and a[1] == b[1] for a, b in zip(calls, calls[1:], strict=False))
    assert len(calls) == report.tensor_count + 1
    assert reads == sorted(reads)  # shard by shard, in order

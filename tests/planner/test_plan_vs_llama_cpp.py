"""The planner's numbers against the buffers llama.cpp itself reports when it loads the model.

llama.cpp logs `<dev> model buffer size`, `KV buffer size`, `compute buffer size` and `output buffer
size` lines; the plan's weights (mapped file + repacked copies), KV cache and compute buffer must be
within 5% of them, for the real Gemma 3 270M (sliding-window KV, a 262k vocabulary whose logits
dominate the compute buffer) and tiny converted MoE models at a context where attention does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from memory_log import MIB, assert_close, context_log

from edge_ai.gguf_file import read_gguf
from runtime.planner.plan import GIB, Budget, Request, make_plan

KV_CODES = {"f16": 1, "q8_0": 8, "q4_0": 2}  # ggml_type values
LINES = {name: re.compile(rf"{pattern} += +([\d.]+) MiB") for name, pattern in {
    "weights": r"model buffer size", "kv": r"KV buffer size", "compute": r"compute buffer size",
    "output": r"output buffer size"}.items()}


def reported(path: Path, caplog: pytest.LogCaptureFixture, *, n_ctx: int, kv_type: str, flash_attn: bool,
             n_ubatch: int = 512) -> dict[str, float]:
    """Bytes llama.cpp says it allocated for each kind of buffer, loading `path` with these settings."""
    text = context_log(path, caplog, n_ctx=n_ctx, n_batch=n_ubatch, n_ubatch=n_ubatch, swa_full=False,
                       type_k=KV_CODES[kv_type], type_v=KV_CODES[kv_type], flash_attn_type=int(flash_attn))
    # The compute buffer is logged again when the context is freed: count the first report only.
    text = text.split("~llama_context")[0]
    return {name: sum(float(x) for x in line.findall(text)) * MIB for name, line in LINES.items()}


def _check(path: Path, caplog: pytest.LogCaptureFixture, n_ctx: int, kv_type: str) -> None:
    info = read_gguf(path)
    plan = make_plan(info, Budget(ram=64 * GIB), Request(ctx=n_ctx, kv_type=kv_type))
    assert (plan.ctx, plan.kv_type) == (n_ctx, kv_type)
    got = reported(path, caplog, n_ctx=n_ctx, kv_type=kv_type, flash_attn=plan.flash_attn)
    label = f"{path.name} ctx={n_ctx} kv={kv_type}"
    assert_close(plan.cpu.weights, got["weights"], f"{label} weights")
    assert_close(plan.cpu.kv_cache, got["kv"], f"{label} KV cache")
    assert_close(plan.compute_buffer, got["compute"], f"{label} compute buffer")


@pytest.mark.slow
@pytest.mark.parametrize(("n_ctx", "kv_type"), [(4096, "f16"), (8192, "q8_0")])
def test_default_model_plan_matches_llama_cpp(model_path: Path, caplog, n_ctx: int, kv_type: str) -> None:
    _check(model_path, caplog, n_ctx, kv_type)


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "kv_type"), [("qwen2moe", "f16"), ("qwen3moe", "f16"), ("qwen3moe", "q8_0"),
                                               ("qwen3moe", "q4_0"), ("mixtral", "f16")])
def test_tiny_moe_plan_matches_llama_cpp(tiny_moe, caplog, arch: str, kv_type: str) -> None:
    _check(tiny_moe(arch), caplog, 4096, kv_type)

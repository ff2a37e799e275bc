"""mmap in a plan: kept on where llama.cpp maps tensors without a copy (experts paged from disk, experts
overridden to CPU beside offloaded layers), off where every weight is copied to the GPU anyway; the
saved load options, the llama.cpp flags and the printed plan agree."""

from __future__ import annotations

import pytest

from edge_ai import registry
from edge_ai.gguf_file import read_gguf
from edge_ai.tensor_roles import Role, weights
from runtime.llm.engine import EngineOptions
from runtime.llm.loading import with_saved_plan
from runtime.planner.plan import GIB, MARGIN_FRACTION, Budget, Request, make_plan


@pytest.mark.slow
def test_paged_experts_keep_mmap_on_and_mlock_off(tiny_moe) -> None:
    info = read_gguf(tiny_moe("qwen2moe"))
    whole = make_plan(info, Budget(ram=GIB), Request(ctx=256))
    assert whole.use_mmap and "read in place" in whole.mmap_reason
    budget = int((whole.cpu.total - weights(info).by_role[Role.EXPERTS] // 2) / (1 - MARGIN_FRACTION))
    paged = make_plan(info, Budget(ram=budget), Request(ctx=256))
    assert paged.mode == "mmap-paged" and paged.use_mmap and "--no-mmap" not in paged.llama_cpp_flags()
    assert "whole file" in paged.mmap_reason and "mlock" in paged.mmap_reason
    options = paged.load_options()
    assert options["use_mmap"] is True and options["use_mlock"] is False and options["lock_resident"] is True
    registry.save_plan("paged", options)  # through JSON, as `edge-ai plan --apply` saves it
    loaded = with_saved_plan(EngineOptions(), "paged")
    assert loaded.use_mmap and loaded.lock_resident and not loaded.use_mlock and loaded.context == 256
    assert whole.load_options()["lock_resident"] is False


@pytest.mark.slow
def test_full_gpu_offload_turns_mmap_off_and_cpu_experts_keep_it(tiny_moe) -> None:
    info = read_gguf(tiny_moe("qwen2moe"))
    everything = make_plan(info, Budget(ram=GIB, vram=GIB, gpu_backend=True), Request(ctx=1024))
    assert (everything.n_gpu_layers, everything.n_cpu_moe) == (3, 0)
    assert not everything.use_mmap and everything.llama_cpp_flags()[-1] == "--no-mmap"
    assert everything.load_options()["use_mmap"] is False and "copied to the GPU" in everything.mmap_reason
    one_layer = weights(info).per_layer[0][Role.EXPERTS]
    vram = int((everything.gpu.total - one_layer // 2) / (1 - MARGIN_FRACTION))
    split = make_plan(info, Budget(ram=GIB, vram=vram, gpu_backend=True), Request(ctx=1024))
    assert split.n_cpu_moe == 1 and split.use_mmap and "--no-mmap" not in split.llama_cpp_flags()
    assert split.load_options()["tensor_overrides"] and "default CPU buffer" in split.mmap_reason
    no_gpu = make_plan(info, Budget(ram=GIB, vram=GIB, gpu_backend=False), Request(ctx=1024))
    assert no_gpu.load_options()["use_mmap"] is True  # this build loads it all in RAM: nothing to copy anywhere

"""The engine's RAM check and the planner size a model the same way (edge_ai.memory): the check
accepts what a plan accepts (a quantized KV cache, routed experts paged from disk) and refuses the
same model loaded without mmap, locked, or with the bigger cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf
from edge_ai.memory import check_fits_in_ram, footprint
from edge_ai.tensor_roles import Role, weights
from runtime.planner.plan import MARGIN_FRACTION, MIB, Budget, Request, make_plan


def _check(plan, info, available: int, **overrides: object) -> None:
    options = dict(kv_type=plan.kv_type, flash_attn=plan.flash_attn, available=available)
    check_fits_in_ram(info, plan.ctx, plan.n_ubatch, **{**options, **overrides})


@pytest.mark.slow
def test_the_check_pages_experts_from_disk_as_the_plan_does(tiny_moe) -> None:
    info = read_gguf(tiny_moe("qwen2moe"))
    experts = weights(info).by_role[Role.EXPERTS]
    whole = make_plan(info, Budget(ram=1 << 30), Request(ctx=256))
    assert whole.mode == "ram" and whole.cpu.total == footprint(info, 256, cpu_flags=None).total
    budget = int((whole.cpu.total - experts // 2) / (1 - MARGIN_FRACTION))  # room for half of the experts
    paged = make_plan(info, Budget(ram=budget), Request(ctx=256))
    assert paged.mode == "mmap-paged" and paged.fits
    usable = budget - paged.cpu.margin  # the RAM the plan fits in; the whole file does not
    assert paged.cpu.total > usable
    _check(paged, info, usable)
    with pytest.raises(EdgeAIError, match=r"needs about .* experts paged from disk it still needs"):
        _check(paged, info, whole.cpu.total - experts - 1)  # not even the always-used part fits
    for why in ({"use_mmap": False}, {"use_mlock": True}):  # the whole file must then be resident
        with pytest.raises(EdgeAIError, match=r"needs about .* GiB of RAM is free; pick"):
            _check(paged, info, usable, **why)


@pytest.mark.slow
def test_the_check_counts_the_kv_cache_type_the_plan_chose(model_path: Path) -> None:
    gemma = read_gguf(model_path)
    f16 = footprint(gemma, 32768, kv_type="f16")
    q8 = footprint(gemma, 32768, kv_type="q8_0", flash_attn=True)
    assert q8.kv_cache < f16.kv_cache and q8.total < f16.total - 16 * MIB
    budget = int(q8.total / (1 - MARGIN_FRACTION)) + MIB
    plan = make_plan(gemma, Budget(ram=budget), Request(ctx=32768))
    assert (plan.ctx, plan.kv_type, plan.flash_attn) == (32768, "q8_0", True) and plan.cpu.total == q8.total
    _check(plan, gemma, q8.total)
    with pytest.raises(EdgeAIError, match=r"KV cache \d+ MiB \(f16\) at context 32768"):
        _check(plan, gemma, q8.total, kv_type="f16", flash_attn=False)

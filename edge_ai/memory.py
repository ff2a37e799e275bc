"""How much memory a model needs on the CPU, and the check that refuses one that does not fit.

One sizing for both the memory planner (runtime.planner) and the engine's check before loading, so
the engine never refuses a plan the planner accepted: weights by role (routed experts apart, since
a model run from mmap pages them in from disk instead of holding them), ggml-cpu's repacked copies,
the KV cache at the chosen type, the recurrent state, the compute and output buffers and a runtime
overhead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psutil

from edge_ai.buffers import compute_buffer_bytes, output_buffer_bytes, repacked_bytes
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import GGUFInfo
from edge_ai.kv_cache import kv_cache_bytes, recurrent_state_bytes
from edge_ai.tensor_roles import Role, Weights, weights

log = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2
# Runtime overhead beyond weights, KV cache and buffers; a margin.
RUNTIME_OVERHEAD_BYTES = 64 * MIB


@dataclass(frozen=True)
class Footprint:
    """A model's memory on the CPU for one context and KV type, in bytes."""

    weights: int  # every tensor of the file
    experts: int  # the routed experts among them (0 for a dense model)
    repacked: int  # ggml-cpu's interleaved copies of some quantized weights, beside the mapped file
    kv_cache: int
    recurrent: int  # a hybrid's convolution state (LFM2), per sequence, not per cell
    buffers: int  # compute buffer + output buffer + runtime overhead

    @property
    def total(self) -> int:
        """Everything resident: the file wholly in RAM."""
        return self.weights + self.repacked + self.kv_cache + self.recurrent + self.buffers

    @property
    def resident_when_paged(self) -> int:
        """What must stay in RAM when the routed experts page in from the mapped file as tokens use them."""
        return self.total - self.experts


@dataclass(frozen=True)
class ModelFit:
    """The memory planner's verdict on one model, as `edge-ai doctor` and the model picker show it
    (made by runtime.planner.plan.model_fit; defined here so the core can show it without importing
    the runtime)."""

    verdict: str  # "fits", "fits with experts in RAM", "pages from disk" or "does not fit"
    detail: str  # context and KV type, or what is missing
    fits: bool  # False only for "does not fit"
    ram: int  # bytes of system RAM the plan uses
    kv_cache: int  # bytes of KV cache at the planned context

    def line(self) -> str:
        return f"{self.verdict} ({self.detail})"


def footprint(info: GGUFInfo, n_ctx: int, *, n_ubatch: int = 512, kv_type: str = "f16", flash_attn: bool = False,
              swa_full: bool = False, cpu_flags: set[str] | None = None, w: Weights | None = None) -> Footprint:
    """The CPU footprint of `info` at `n_ctx` tokens, micro-batches of `n_ubatch` (llama-cpp-python clamps
    them to the context) and K/V stored as `kv_type`. `w` saves classifying the tensors again."""
    w = w or weights(info)
    ubatch = min(n_ctx, n_ubatch)
    compute = compute_buffer_bytes(info, w.n_vocab, n_ctx, n_ubatch=ubatch, flash_attn=flash_attn, swa_full=swa_full)
    return Footprint(weights=w.total, experts=w.by_role.get(Role.EXPERTS, 0), repacked=repacked_bytes(info, cpu_flags),
                     kv_cache=kv_cache_bytes(info, n_ctx, n_ubatch=ubatch, swa_full=swa_full, type_k=kv_type,
                                             type_v=kv_type),
                     recurrent=recurrent_state_bytes(info),
                     buffers=compute + output_buffer_bytes(w.n_vocab) + RUNTIME_OVERHEAD_BYTES)


def check_fits_in_ram(info: GGUFInfo, n_ctx: int, n_ubatch: int = 512, *, kv_type: str = "f16",
                      flash_attn: bool = False, swa_full: bool = False, use_mmap: bool = True,
                      use_mlock: bool = False, available: int | None = None) -> Footprint:
    """Refuse a model that does not fit in the RAM available now (`available`, default: free RAM).

    A mixture-of-experts model mapped from its file (mmap on, not locked) fits when everything but its
    routed experts does: the experts then page in from disk as the router picks them, as `edge-ai plan`
    plans it ("mmap-paged"). Without mmap, or with the whole mapping locked, the file must fit."""
    need = footprint(info, n_ctx, n_ubatch=n_ubatch, kv_type=kv_type, flash_attn=flash_attn, swa_full=swa_full)
    free = psutil.virtual_memory().available if available is None else available
    if need.total <= free:
        return need
    pageable = use_mmap and not use_mlock and need.experts > 0
    if pageable and need.resident_when_paged <= free:
        log.info("%s: %.1f GiB does not fit in %.1f GiB free; its %.1f GiB of routed experts page in from disk",
                 info.path.name, need.total / GIB, free / GIB, need.experts / GIB)
        return need
    paged = (f"; with its {need.experts / GIB:.1f} GiB of experts paged from disk it still needs "
             f"{need.resident_when_paged / GIB:.1f} GiB") if pageable else ""
    raise EdgeAIError(
        f"{info.path.name} needs about {need.total / GIB:.1f} GiB (weights {need.weights / GIB:.1f} GiB + "
        f"KV cache {need.kv_cache / MIB:.0f} MiB ({kv_type}) at context {n_ctx} + buffers) but only "
        f"{free / GIB:.1f} GiB of RAM is free{paged}; pick a smaller quantization, lower model.context, "
        "a quantized KV cache (`edge-ai plan`), or close other programs"
    )

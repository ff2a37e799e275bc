"""Choose where a model's parts live and how long a context it gets, within a memory budget.

The decisions, in order (llama.cpp's `--fit` shrinks the context first and cannot move experts;
this planner keeps experts as the first thing to leave fast memory, because a token reads only
expert_used_count / expert_count of them):
1. KV cache type: f16 unless only a quantized cache reaches the wanted context (q8_0, then q4_0;
   both need flash attention).
2. Context: the one asked for, else the largest multiple of 256 up to the trained length whose
   whole footprint fits the budget with a margin.
3. GPU (a --vram budget): whole layers from the last one down; for a MoE model, first every
   always-used weight and the KV cache, then the experts of the last layers while they fit
   (`--n-cpu-moe N` keeps the experts of the first N layers in system RAM).
4. CPU only and bigger than RAM: a MoE model whose always-used part fits runs from mmap with
   its experts paged in from disk; anything else is impossible and the plan says by how much.
5. RPC helpers (`--rpc`, llama.cpp's RPC backend): their memory joins the budget and whole layers are
   split between this machine and each helper in proportion to the memory each can give them.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edge_ai.buffers import compute_buffer_bytes, head_dim, output_buffer_bytes, repacked_bytes
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import GGUFInfo
from edge_ai.kv_cache import CELL_PAD, KV_TYPE_BYTES, kv_cache_bytes
from edge_ai.memory import RUNTIME_OVERHEAD_BYTES, ModelFit, footprint
from edge_ai.tensor_roles import Role, Weights, weights
from runtime.planner.profile import ExpertProfile

MIB = 1024**2
GIB = 1024**3
KV_TYPES = ("f16", "q8_0", "q4_0")
MARGIN_FRACTION = 0.05  # of each pool, left free for the OS, the app and allocator slack
MIN_CONTEXT = CELL_PAD
QUANT_BLOCK = 32


@dataclass(frozen=True)
class Helper:
    """One device of an RPC server (`edge-ai rpc-server` on another machine) and the memory it offers."""

    server: str  # host:port
    memory: int  # bytes the server reports free on this device (its --mem, else its free RAM)


@dataclass(frozen=True)
class Budget:
    """The memory a plan may use, in bytes."""

    ram: int
    vram: int = 0  # a discrete GPU's memory; 0: none
    unified: bool = False  # `ram` is one pool the CPU and an integrated GPU share
    gpu_backend: bool = False  # this llama.cpp build can offload (CUDA, Metal, Vulkan...)
    rpc: tuple[Helper, ...] = ()  # RPC devices, in the order llama.cpp gets them


@dataclass(frozen=True)
class Request:
    """What the user fixed; None lets the planner choose."""

    ctx: int | None = None
    kv_type: str | None = None
    n_ubatch: int = 512
    swa_full: bool = False
    cpu_moe_below: int | None = None  # keep the experts of blocks below this in system RAM (--n-cpu-moe)


@dataclass(frozen=True)
class Pool:
    """One memory pool's share of the plan, in bytes."""

    weights: int = 0
    kv_cache: int = 0
    compute: int = 0  # compute buffer, plus the output buffer and runtime overhead on the CPU
    budget: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute

    @property
    def margin(self) -> int:
        return int(self.budget * MARGIN_FRACTION)

    @property
    def shortfall(self) -> int:
        """Bytes missing to fit with the margin (0 when it fits)."""
        return max(0, self.total + self.margin - self.budget)


@dataclass(frozen=True)
class Plan:
    """A placement and its memory, as `edge-ai plan` prints it and the engine applies it."""

    model: str
    path: str
    architecture: str
    n_layer: int
    ctx: int
    kv_type: str
    flash_attn: bool
    n_ubatch: int
    weights_by_role: dict[str, int]
    compute_buffer: int  # ggml's graph peak for one micro-batch (on each device that computes)
    repacked: int  # ggml-cpu's interleaved copies of some quantized weights, beside the mapped file
    cpu: Pool
    gpu: Pool
    n_gpu_layers: int  # layers llama.cpp offloads (n_layer + 1 also offloads the output layer)
    n_cpu_moe: int  # leading expert layers whose experts stay in system RAM
    expert_layers: list[int]
    user_moe: bool  # the user asked for the experts in system RAM (--cpu-moe / --n-cpu-moe)
    mode: str  # "ram", "gpu", "unified" or "mmap-paged"
    fits: bool
    missing: int  # bytes short of the budget when it does not fit
    gpu_applied: bool  # False: the GPU placement was computed for a --vram budget this build cannot use
    bytes_per_token: float  # weight bytes one decoded token reads
    kv_bytes_full: int  # KV bytes a token at the full context also reads
    use_mmap: bool = True  # map the file (llama.cpp's default); see mmap_choice
    mmap_reason: str = ""
    notes: list[str] = field(default_factory=list)
    # From an expert profile when experts are paged: per block, the experts that fit in RAM
    # (busiest first), and the share of the profiled router picks they would serve.
    hot_experts: dict[int, list[int]] = field(default_factory=dict)
    resident_routing_share: float | None = None
    # RPC ("rpc" mode): the helpers' devices in llama.cpp's order, the layers each holds (the output
    # layer counts as one, after the last block, as llama.cpp counts it) and their memory.
    rpc: list[Helper] = field(default_factory=list)
    rpc_layers: list[int] = field(default_factory=list)
    rpc_pools: list[Pool] = field(default_factory=list)

    @property
    def is_moe(self) -> bool:
        return bool(self.expert_layers)

    @property
    def cpu_moe_layers(self) -> list[int]:
        return self.expert_layers[: self.n_cpu_moe]

    def tensor_overrides(self) -> list[tuple[str, str]]:
        """(regex, device) overrides keeping the planned experts in system RAM while the rest is offloaded."""
        if not self.n_cpu_moe or not (self.n_gpu_layers or self.user_moe):
            return []
        return expert_overrides(self.cpu_moe_layers)

    def load_options(self) -> dict[str, object]:
        """The runtime.llm.engine.EngineOptions fields that load this plan in this llama.cpp build
        (a GPU placement only where a GPU backend exists)."""
        gpu = self.gpu_applied or self.mode == "unified"
        options: dict[str, object] = {
            "context": self.ctx, "kv_type": self.kv_type, "flash_attn": self.flash_attn,
            "n_gpu_layers": self.n_gpu_layers if gpu or self.rpc else 0,
            "tensor_overrides": [list(o) for o in self.tensor_overrides()] if gpu or self.user_moe else [],
            "use_mmap": self.use_mmap if gpu else True, "use_mlock": False,
            "lock_resident": self.mode == "mmap-paged",
            "hot_experts": [[il, experts] for il, experts in self.hot_experts.items() if experts]}
        if self.rpc and self.n_gpu_layers:  # no layer there: leave the servers free for other clients
            options |= {"rpc_servers": self.rpc_servers(), "tensor_split": [float(n) for n in self.rpc_layers]}
        return options

    def rpc_servers(self) -> list[str]:
        """The RPC servers (host:port) of the plan's helper devices, each once, in order."""
        return list(dict.fromkeys(helper.server for helper in self.rpc))

    def llama_cpp_flags(self) -> list[str]:
        """The llama.cpp command-line flags (llama-cli / llama-server) that load the same placement."""
        flags = ["-m", self.path, "-c", str(self.ctx), "-ub", str(self.n_ubatch), "-ngl", str(self.n_gpu_layers)]
        if self.rpc:
            flags += ["--rpc", ",".join(self.rpc_servers()), "-ts", ",".join(str(n) for n in self.rpc_layers)]
        if self.n_cpu_moe and (self.n_gpu_layers or self.user_moe):
            whole = self.n_cpu_moe == len(self.expert_layers)
            flags += ["--cpu-moe"] if whole else ["--n-cpu-moe", str(self.expert_layers[self.n_cpu_moe - 1] + 1)]
        if self.kv_type != "f16":
            flags += ["-ctk", self.kv_type, "-ctv", self.kv_type]
        flags += ["-fa", "on" if self.flash_attn else "off"]
        if not self.use_mmap:
            flags.append("--no-mmap")
        return flags

    def command(self) -> str:
        return "llama-cli " + shlex.join(self.llama_cpp_flags())

    def tokens_per_second(self, bandwidth: float) -> tuple[float, float] | None:
        """(at a full context, at an empty one): decode reads the used weights and the KV cache once
        per token, so tok/s ~ bandwidth / bytes read. Only system-RAM bytes are timed. None for a
        model paged from disk, whose speed depends on how often the same experts come back."""
        if self.mode == "mmap-paged":
            return None
        share = self.cpu.weights / max(1, self.cpu.weights + self.gpu.weights)
        weight_bytes = self.bytes_per_token * share
        kv = self.kv_bytes_full * (self.cpu.kv_cache / max(1, self.cpu.kv_cache + self.gpu.kv_cache))
        return bandwidth / max(1.0, weight_bytes + kv), bandwidth / max(1.0, weight_bytes)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["cpu"]["total"], data["gpu"]["total"] = self.cpu.total, self.gpu.total
        for pool, entry in zip(self.rpc_pools, data["rpc_pools"]):
            entry["total"] = pool.total
        data["overrides"] = [f"{pattern}={device}" for pattern, device in self.tensor_overrides()]
        data["llama_cpp_flags"] = self.llama_cpp_flags()
        return data


class _Sizer:
    """The footprint of one model for a context, KV type and split, from its header alone."""

    def __init__(self, info: GGUFInfo, request: Request, cpu_flags: set[str] | None) -> None:
        self.info = info
        self.request = request
        self.w: Weights = weights(info)
        self.n_layer = info.block_count or 0
        self.cpu_flags = cpu_flags
        self.repack = repacked_bytes(info, cpu_flags)
        self.output_layer = (self.w.by_role.get(Role.OUTPUT, 0) or
                             (self.w.by_role.get(Role.EMBEDDINGS, 0) if self.w.tied_output else 0))

    def forced_cpu_moe(self) -> int:
        """How many expert layers the user keeps in system RAM."""
        below = self.request.cpu_moe_below
        return 0 if below is None else sum(1 for il in self.w.expert_layers if il < below)

    def ubatch(self, ctx: int) -> int:
        """llama-cpp-python clamps the batch, and so the micro-batch, to the context."""
        return min(ctx, self.request.n_ubatch)

    def kv(self, ctx: int, kv_type: str) -> int:
        return kv_cache_bytes(self.info, ctx, n_ubatch=self.ubatch(ctx), swa_full=self.request.swa_full,
                              type_k=kv_type, type_v=kv_type)

    def compute(self, ctx: int, flash_attn: bool) -> int:
        return compute_buffer_bytes(self.info, self.w.n_vocab, ctx, n_ubatch=self.ubatch(ctx),
                                    flash_attn=flash_attn, swa_full=self.request.swa_full)

    def cpu_only(self, ctx: int, kv_type: str, budget: int) -> Pool:
        """Everything in system RAM, sized as the engine's RAM check sizes it (edge_ai.memory)."""
        need = footprint(self.info, ctx, n_ubatch=self.request.n_ubatch, kv_type=kv_type, flash_attn=kv_type != "f16",
                         swa_full=self.request.swa_full, cpu_flags=self.cpu_flags, w=self.w)
        return Pool(need.weights + need.repacked, need.kv_cache + need.recurrent, need.buffers, budget)

    def split(self, ctx: int, kv_type: str, budget: Budget) -> tuple[Pool, Pool, int, int]:
        """(cpu, gpu, n_gpu_layers, n_cpu_moe) for the most offloading that fits `budget.vram`."""
        flash = kv_type != "f16"
        kv_layer = self.kv(ctx, kv_type) / max(1, self.n_layer)
        compute = self.compute(ctx, flash)
        experts = self.w.expert_layers
        host_extra = output_buffer_bytes(self.w.n_vocab) + RUNTIME_OVERHEAD_BYTES

        def pools(ngl: int, n_cpu_moe: int) -> tuple[Pool, Pool]:
            on_gpu = range(max(0, self.n_layer - ngl), self.n_layer)
            cpu_experts = set(experts[:n_cpu_moe])
            gpu_w = sum(self.w.layer_bytes(il, experts=il not in cpu_experts) for il in on_gpu)
            gpu_w += self.output_layer if ngl > self.n_layer else 0
            gpu_kv = round(kv_layer * len(on_gpu))
            gpu = Pool(gpu_w, gpu_kv, compute if ngl else 0, budget.vram)
            cpu_w = self.w.total - gpu_w + (self.output_layer if self.w.tied_output and ngl > self.n_layer else 0)
            cpu = Pool(cpu_w, self.kv(ctx, kv_type) - gpu_kv, compute + host_extra, budget.ram)
            return cpu, gpu

        full = self.n_layer + 1
        candidates = [(full, 0)]
        if experts:  # experts leave the GPU layer by layer before any always-used weight does
            candidates += [(full, n) for n in range(1, len(experts) + 1)]
        candidates += [(ngl, len(experts)) for ngl in range(self.n_layer, -1, -1)]
        forced = self.forced_cpu_moe()
        for ngl, n_cpu_moe in candidates:
            if n_cpu_moe < forced:
                continue
            cpu, gpu = pools(ngl, n_cpu_moe)
            if not gpu.shortfall:
                return cpu, gpu, ngl, n_cpu_moe
        cpu, gpu = pools(0, len(experts))
        return cpu, gpu, 0, len(experts)

    def rpc_split(self, ctx: int, kv_type: str, budget: Budget) -> tuple[Pool, list[Pool], list[int]]:
        """(this machine's pool, one pool per helper device, units per helper device).

        llama.cpp counts units as the blocks, then the output layer, and gives the last n_gpu_layers
        of them to the devices in order, by tensor_split: as soon as any block leaves this machine, the
        output layer goes to the last device with a share (a copy of the token embedding when the head
        is tied). So the output layer is a fixed cost of one helper, the last one with room for it, and
        the blocks are cut so that each machine's share of their bytes (weights and KV cache) follows
        the room it has left once its fixed costs are paid: here the token embedding, compute and
        output buffers; on a helper its compute buffer. A helper's ggml keeps its weights in its plain
        CPU buffer: no repacked copies there."""
        flash = kv_type != "f16"
        kv_total = self.kv(ctx, kv_type)
        kv_layer = kv_total / max(1, self.n_layer)
        compute = self.compute(ctx, flash)
        host_extra = output_buffer_bytes(self.w.n_vocab) + RUNTIME_OVERHEAD_BYTES
        unit_weights = [self.w.layer_bytes(il) for il in range(self.n_layer)] + [self.output_layer]
        head = self.w.total - sum(unit_weights) + (self.output_layer if self.w.tied_output else 0)
        budgets = [budget.ram, *(helper.memory for helper in budget.rpc)]
        fixed = [head + compute + host_extra, *(compute for _ in budget.rpc)]
        room = [max(0.0, b * (1 - MARGIN_FRACTION) - f) for b, f in zip(budgets, fixed)]
        fitting = [p for p in range(1, len(room)) if room[p] >= self.output_layer]
        holder = fitting[-1] if fitting else 0  # no helper can take the output layer: no block leaves
        room[holder] -= self.output_layer if holder else 0
        room[holder + 1:] = [0.0] * (len(room) - holder - 1)  # after the holder, nothing: the output is last
        counts = _proportional_counts([w + kv_layer for w in unit_weights[:-1]], room)
        counts[holder if any(counts[1:]) else 0] += 1  # the output unit

        def units(p: int) -> range:
            start = sum(counts[:p])
            return range(start, start + counts[p])

        helpers = []
        for p, helper in enumerate(budget.rpc, start=1):
            held = units(p)
            layers = [u for u in held if u < self.n_layer]
            weight = sum(unit_weights[u] for u in held)
            helpers.append(Pool(weight, round(kv_layer * len(layers)), compute if held else 0, helper.memory))
        output_away = counts[0] <= self.n_layer  # the output layer is the last unit
        local_weights = self.w.total - sum(p.weights for p in helpers) + (
            self.output_layer if self.w.tied_output and output_away else 0)  # a tied head is copied to its device
        repack = round(self.repack * min(counts[0], self.n_layer) / max(1, self.n_layer))
        cpu = Pool(local_weights + repack, kv_total - sum(p.kv_cache for p in helpers), compute + host_extra,
                   budget.ram)
        return cpu, helpers, counts[1:]


def _proportional_counts(costs: list[float], room: list[float]) -> list[int]:
    """How many of `costs` (in order) each of len(room) pools takes, consecutively, so that their sums
    follow `room`: each cut at the boundary nearest its share of the total (all to the first pool
    when no pool has room)."""
    total, capacity = sum(costs), sum(room)
    if capacity <= 0:
        return [len(costs)] + [0] * (len(room) - 1)
    bounds = [0.0]
    for cost in costs:
        bounds.append(bounds[-1] + cost)
    cuts, reached, previous = [], 0.0, 0
    for share in room[:-1]:
        reached += share
        target = total * reached / capacity
        previous = min(range(previous, len(costs) + 1), key=lambda i: abs(bounds[i] - target))
        cuts.append(previous)
    return [b - a for a, b in zip([0, *cuts], [*cuts, len(costs)])]


def expert_overrides(layers: list[int]) -> list[tuple[str, str]]:
    """One anchored (regex, "CPU") override for the routed experts of blocks `layers` (llama.cpp's
    `-ot`; `--cpu-moe` is every expert layer, `--n-cpu-moe N` those below block N)."""
    if not layers:
        return []
    return [(rf"^blk\.({'|'.join(str(il) for il in layers)})\.ffn_[a-z_]+_exps\.[a-z]+$", "CPU")]


def kv_type_fits_heads(info: GGUFInfo, kv_type: str) -> bool:
    """Quantized caches store each head's row in blocks of 32 values: llama.cpp refuses the context
    when a head is not a whole number of blocks."""
    return kv_type in ("f32", "f16", "bf16") or head_dim(info) % QUANT_BLOCK == 0


def _pad(n: int) -> int:
    return max(MIN_CONTEXT, n // CELL_PAD * CELL_PAD)


def make_plan(info: GGUFInfo, budget: Budget, request: Request = Request(), *, name: str | None = None,
              cpu_flags: set[str] | None = None, profile: ExpertProfile | None = None) -> Plan:
    """The plan for `info` within `budget`; `fits` is False (and `missing` set) when nothing fits.
    With an expert `profile`, a model paged from disk lists the busiest experts that fit in RAM."""
    if request.kv_type is not None and request.kv_type not in KV_TYPE_BYTES:
        raise ValueError(f"unknown KV cache type {request.kv_type!r}")
    if request.kv_type is not None and not kv_type_fits_heads(info, request.kv_type):
        raise EdgeAIError(f"a {request.kv_type} KV cache needs attention heads of a multiple of {QUANT_BLOCK} "
                          f"values and {info.path.name} has {head_dim(info)}: use --kv-type f16")
    sizer = _Sizer(info, request, cpu_flags)
    if request.cpu_moe_below is not None and not sizer.w.is_moe:
        raise EdgeAIError(f"{info.path.name} has no routed experts (a dense model): --cpu-moe and --n-cpu-moe "
                          "apply to mixture-of-experts models only")
    trained = info.context_length or 4096
    wanted = _pad(min(request.ctx or trained, trained)) if request.ctx else _pad(trained)

    def attempt(ctx: int, kv_type: str) -> Plan:
        return _place(sizer, budget, ctx, kv_type, name or info.name)

    def largest(kv_type: str) -> Plan:
        """The plan with the longest context up to `wanted` that fits (or the shortest if none)."""
        lo, hi = MIN_CONTEXT // CELL_PAD, wanted // CELL_PAD
        best = attempt(MIN_CONTEXT, kv_type)
        if not best.fits:
            return best
        while lo < hi:
            mid = (lo + hi + 1) // 2
            trial = attempt(mid * CELL_PAD, kv_type)
            lo, hi, best = (mid, hi, trial) if trial.fits else (lo, mid - 1, best)
        return best

    kv_types = [request.kv_type] if request.kv_type else [t for t in KV_TYPES if kv_type_fits_heads(info, t)]
    if request.ctx:  # the context is fixed: the first KV type that fits it
        plans = [attempt(wanted, kv) for kv in kv_types]
        chosen = next((p for p in plans if p.fits), plans[0])
    else:
        plans = [largest(kv) for kv in kv_types]
        chosen = next((p for p in plans if p.fits and p.ctx == wanted), None) or max(
            plans, key=lambda p: (p.fits, p.ctx, -KV_TYPES.index(p.kv_type) if p.kv_type in KV_TYPES else 0))
    if profile is not None:
        chosen = _with_hot_experts(chosen, sizer.w, profile)
    if request.ctx and request.ctx > trained:
        chosen = replace(chosen, notes=[*chosen.notes, f"the model was trained on {trained} tokens: "
                                                       f"context capped at {chosen.ctx}"])
    return chosen


def mmap_choice(mode: str, n_gpu_layers: int, n_layer: int, experts_overridden: bool) -> tuple[bool, str]:
    """(use mmap, why), from what llama.cpp 0.3.36 does with a mapping and tensor overrides.

    llama.cpp wraps the mapped file as the buffer of every tensor whose buffer type is the CPU
    device's default one (llama-model.cpp: use_mmap && buffer_from_host_ptr && is_default_buft), with
    no copy; a tensor in any other buffer (a GPU, a pinned host buffer, ggml-cpu's repacked copies)
    is allocated and copied out of the mapping at load. An override to "CPU" goes through the normal
    weight-buffer choice, so the overridden experts land in that default buffer and stay mapped."""
    if mode == "mmap-paged":
        return True, ("on: the routed experts stay pages of the mapped file, which the kernel reads in as the "
                      "router picks them and drops under memory pressure; --no-mmap would read the whole file "
                      "into RAM, and llama.cpp's mlock would pin the whole mapping, experts included; the engine "
                      "locks only the always-used weights (and any hot experts) in the mapping instead, and where the "
                      "disk's read-ahead window is bigger than one expert's slab it marks the mapping MADV_RANDOM so that a "
                      "fault reads the page it needs, not other experts around it")
    if mode == "rpc":
        return True, ("on: this machine's layers are read in place from the mapped file; the helpers' layers are "
                      "read from it once at load and sent to them")
    if experts_overridden:
        return True, ("on: the experts overridden to CPU land in llama.cpp's default CPU buffer, which maps the "
                      "file without a copy (page cache, reclaimable); the offloaded weights are copied to the GPU "
                      "from the mapping")
    if mode == "gpu" and n_gpu_layers > n_layer:
        return False, ("off: every layer and the output are copied to the GPU, so a mapping would only add the "
                       "file to the page cache; without it llama.cpp reads each tensor once into its buffer")
    return True, "on: the weights are read in place from the mapped file (shared with the page cache, fast start)"


def _place(sizer: _Sizer, budget: Budget, ctx: int, kv_type: str, name: str) -> Plan:
    w = sizer.w
    info = sizer.info
    notes: list[str] = []
    use_gpu = budget.vram > 0 and not budget.unified
    helpers: list[Pool] = []
    rpc_layers: list[int] = []
    if budget.rpc:
        cpu, helpers, rpc_layers = sizer.rpc_split(ctx, kv_type, budget)
        gpu, ngl, n_cpu_moe, mode = Pool(), sum(rpc_layers), 0, "rpc"
        notes.append("RPC: each token's activations cross the network once per helper holding layers; the "
                     "speed estimate assumes the helpers read memory as fast as this machine and leaves out "
                     "network latency")
    elif use_gpu:
        cpu, gpu, ngl, n_cpu_moe = sizer.split(ctx, kv_type, budget)
        mode = "gpu"
        if not budget.gpu_backend:
            notes.append("no GPU backend in this llama.cpp build: the GPU placement is what a GPU build would "
                         "load with this --vram budget; here everything stays in system RAM")
    else:
        cpu = sizer.cpu_only(ctx, kv_type, budget.ram)
        gpu, n_cpu_moe = Pool(), sizer.forced_cpu_moe()
        ngl = sizer.n_layer + 1 if budget.unified and budget.gpu_backend else 0
        mode = "unified" if budget.unified else "ram"
    fits = not cpu.shortfall and not gpu.shortfall and not any(h.shortfall for h in helpers)
    missing = cpu.shortfall + gpu.shortfall + sum(h.shortfall for h in helpers)
    if not fits and not use_gpu and not budget.rpc and w.is_moe:
        experts = w.by_role.get(Role.EXPERTS, 0)
        resident = replace(cpu, weights=cpu.weights - experts)
        if not resident.shortfall:  # the always-used part fits: experts page in from the file
            mode, fits, missing = "mmap-paged", True, 0
            notes.append(f"bigger than the RAM budget: the model runs from mmap, {_gib(experts)} of routed "
                         "experts paged in from disk as tokens use them; speed then follows disk bandwidth")
    overridden = n_cpu_moe > 0 and (ngl > 0 or sizer.request.cpu_moe_below is not None)  # Plan.tensor_overrides
    use_mmap, mmap_reason = mmap_choice(mode, ngl, sizer.n_layer, overridden)
    return Plan(model=name, path=str(Path(info.path)), architecture=info.architecture or "", n_layer=sizer.n_layer,
                ctx=ctx, kv_type=kv_type, flash_attn=kv_type != "f16", n_ubatch=sizer.ubatch(ctx),
                weights_by_role={role.value: n for role, n in w.by_role.items()}, repacked=sizer.repack,
                compute_buffer=sizer.compute(ctx, kv_type != "f16"), cpu=cpu, gpu=gpu,
                n_gpu_layers=ngl, n_cpu_moe=n_cpu_moe, expert_layers=w.expert_layers,
                user_moe=sizer.request.cpu_moe_below is not None, mode=mode, fits=fits,
                missing=missing, gpu_applied=use_gpu and budget.gpu_backend, bytes_per_token=w.read_per_token(),
                kv_bytes_full=sizer.kv(ctx, kv_type), use_mmap=use_mmap, mmap_reason=mmap_reason, notes=notes,
                rpc=list(budget.rpc), rpc_layers=rpc_layers, rpc_pools=helpers)


def model_fit(info: GGUFInfo, *, ram: int, ctx: int, n_ubatch: int = 512, swa_full: bool = False,
              vram: int = 0, gpu_backend: bool = False) -> ModelFit:
    """Whether and how `info` fits `ram` (and `vram`) bytes at context `ctx` (the planner may quantize the
    KV cache to reach it), in the words doctor and the model picker show. Plain values, so callers in the
    core (edge_ai.doctor) take this function without importing the planner's types."""
    plan = make_plan(info, Budget(ram=ram, vram=vram, gpu_backend=gpu_backend),
                     Request(ctx=ctx, n_ubatch=n_ubatch, swa_full=swa_full))
    kv = plan.cpu.kv_cache + plan.gpu.kv_cache
    where = f"context {plan.ctx}, {plan.kv_type} KV cache {_gib(kv)}"
    if not plan.fits:
        return ModelFit("does not fit", f"{_gib(plan.missing)} short at context {plan.ctx}", False, plan.cpu.total, kv)
    if plan.mode == "mmap-paged":
        experts = plan.weights_by_role.get(Role.EXPERTS.value, 0)
        return ModelFit("pages from disk", f"{_gib(experts)} of experts paged in from the file, {where}", True,
                        plan.cpu.total - experts, kv)
    if plan.cpu_moe_layers and plan.n_gpu_layers:
        return ModelFit("fits with experts in RAM", f"experts of {len(plan.cpu_moe_layers)} of "
                        f"{len(plan.expert_layers)} layers in RAM, the rest on the GPU, {where}", True, plan.cpu.total, kv)
    return ModelFit("fits", where, True, plan.cpu.total, kv)


def _with_hot_experts(plan: Plan, w: Weights, profile: ExpertProfile) -> Plan:
    """`plan` with the experts worth keeping resident when they are paged: the most-picked (layer, expert)
    pairs first, across layers, while they fit the RAM left after everything always used. Each
    expert is a contiguous slab of its layer's stacked tensors, so the count may differ per layer."""
    if sorted(profile.counts) != w.expert_layers or profile.n_expert != w.n_expert:
        raise EdgeAIError(f"the expert profile was made for {profile.model} ({profile.n_expert} experts in "
                          f"{len(profile.counts)} layers), not this model; profile it with `edge-ai moe profile`")
    if plan.mode != "mmap-paged":
        return plan
    experts = w.by_role.get(Role.EXPERTS, 0)
    room = plan.cpu.budget - plan.cpu.margin - (plan.cpu.total - experts)
    slab = {il: w.per_layer[il][Role.EXPERTS] / w.n_expert for il in w.expert_layers}
    picks = sorted(((count, il, e) for il, row in profile.counts.items() for e, count in enumerate(row)),
                   key=lambda item: (-item[0], item[1], item[2]))
    hot: dict[int, list[int]] = {il: [] for il in w.expert_layers}
    kept = 0
    for count, il, e in picks:
        if room < slab[il]:
            continue
        room -= slab[il]
        hot[il].append(e)
        kept += count
    share = kept / max(1, sum(sum(row) for row in profile.counts.values()))
    note = (f"expert profile: {sum(map(len, hot.values()))} of {w.n_expert * len(hot)} experts fit in RAM "
            f"({', '.join(f'blk.{il}: {len(es)}' for il, es in hot.items())}) and would serve {share:.0%} of the "
            "profiled router picks; loading locks them in RAM with the always-used weights")
    return replace(plan, hot_experts=hot, resident_routing_share=share, notes=[*plan.notes, note])


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def impossible_message(plan: Plan) -> str:
    """One line: how much is missing for the smallest useful plan and what to do about it."""
    pools = "RAM + VRAM" if plan.gpu.budget else "RAM + the RPC helpers' memory" if plan.rpc else "RAM"
    advice = ["a smaller quantization (`edge-ai quantize`)"]
    if plan.is_moe:
        advice.append("a copy with fewer experts per layer")
    if plan.ctx > MIN_CONTEXT:
        advice.append("a shorter context (--ctx)")
    if plan.cpu.compute > plan.cpu.weights:
        advice.append(f"a smaller batch (model.batch; the compute buffer holds {plan.n_ubatch} tokens' logits)")
    advice.append("more RPC helpers (--rpc) or a larger --mem on them" if plan.rpc else
                  "a larger --ram/--vram budget or closing other programs")
    return (f"{plan.model} does not fit: it needs {_gib(plan.cpu.total + plan.gpu.total)} at context {plan.ctx} "
            f"and {_gib(plan.missing)} more {pools} than the budget (with its margin); try " + ", ".join(advice))

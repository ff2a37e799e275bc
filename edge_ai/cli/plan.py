"""`edge-ai plan MODEL`: where a model's parts should live, how long a context it gets, how fast it runs;
`edge-ai moe profile MODEL --text FILE`: which experts the router picks.

Thin: parses budgets, calls runtime.planner, prints a table or JSON. An impossible plan is an
error (one line, exit 1) that says how much memory is missing and what to do.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edge_ai import registry
from edge_ai.console import ProgressBar, err, out
from edge_ai.errors import EdgeAIError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str, flag: str) -> int:
    """Bytes from '8G', '512MiB', '1.5GB' or a plain byte count (binary units: a budget, not a disk label)."""
    match = _SIZE.match(text)
    if not match:
        raise EdgeAIError(f"{flag} {text!r} is not a size; write it like 8G, 512M or 1.5GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def plan_cmd(
    model: Annotated[str, typer.Argument(help="model name or .gguf path")],
    ctx: Annotated[Optional[int], typer.Option("--ctx", help="context in tokens (default: the largest that fits)")] = None,
    kv_type: Annotated[Optional[str], typer.Option("--kv-type", help="KV cache type: f16, q8_0 or q4_0")] = None,
    ram: Annotated[Optional[str], typer.Option("--ram", help="system RAM budget, e.g. 12G (default: free RAM)")] = None,
    vram: Annotated[Optional[str], typer.Option("--vram", help="GPU memory budget, e.g. 8G")] = None,
    unified: Annotated[Optional[str], typer.Option("--unified", help="one pool shared by CPU and GPU, e.g. 16G")] = None,
    batch: Annotated[int, typer.Option("--batch", help="micro-batch in tokens (sizes the compute buffer)")] = 512,
    cpu_moe: Annotated[bool, typer.Option("--cpu-moe", help="keep every routed expert in system RAM")] = False,
    n_cpu_moe: Annotated[Optional[int], typer.Option(
        "--n-cpu-moe", help="keep the routed experts of the first N layers in system RAM")] = None,
    profile: Annotated[Optional[Path], typer.Option(
        "--profile", help="expert profile (edge-ai moe profile): list the busiest experts that fit in RAM")] = None,
    rpc_servers: Annotated[Optional[str], typer.Option(
        "--rpc", help="RPC servers host:port,... (edge-ai rpc-server): their memory joins the budget")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="save the plan: chat, ask and serve load MODEL with it")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Plan memory for MODEL: weights by role, KV cache, compute buffers, placement, tok/s, llama.cpp flags."""
    import psutil

    from edge_ai.gguf_file import check_gguf
    from edge_ai.rpc_servers import parse_servers
    from runtime.llamacpp.system import build
    from runtime.planner.bandwidth import measure_read_bandwidth
    from runtime.planner.plan import KV_TYPES, Budget, Helper, Request, impossible_message, make_plan

    if kv_type is not None and kv_type not in KV_TYPES:
        raise EdgeAIError(f"--kv-type {kv_type!r} is not one of {', '.join(KV_TYPES)}")
    if unified is not None and (ram is not None or vram is not None):
        raise EdgeAIError("--unified is one pool for CPU and GPU: give it alone, without --ram/--vram")
    if cpu_moe and n_cpu_moe is not None:
        raise EdgeAIError("--cpu-moe keeps every expert in RAM, --n-cpu-moe N some of them: give one")
    if n_cpu_moe is not None and n_cpu_moe < 1:
        raise EdgeAIError(f"--n-cpu-moe {n_cpu_moe} must be a positive number of layers")
    if ctx is not None and ctx < 1:
        raise EdgeAIError(f"--ctx {ctx} must be a positive number of tokens")
    servers = parse_servers(rpc_servers) if rpc_servers is not None else ()
    if servers and (vram is not None or unified is not None or cpu_moe or n_cpu_moe is not None or profile is not None):
        raise EdgeAIError("--rpc splits whole layers between this machine's RAM and the RPC servers; give it with "
                          "--ram, --ctx, --kv-type and --batch only")
    pool = parse_size(unified, "--unified") if unified is not None else None
    helpers: tuple[Helper, ...] = ()
    if servers:
        from runtime.llamacpp.rpc import device_memory

        helpers = tuple(Helper(device.server, device.free) for device in device_memory(servers))
    budget = Budget(ram=pool or (parse_size(ram, "--ram") if ram else psutil.virtual_memory().available),
                    vram=parse_size(vram, "--vram") if vram else 0, unified=pool is not None,
                    gpu_backend=build()[1], rpc=helpers)
    with ProgressBar("assembling model", in_bytes=True) as bar:
        info = check_gguf(registry.resolve(model, progress=bar))
    below = info.block_count if cpu_moe else n_cpu_moe
    experts = None
    if profile is not None:
        from runtime.planner.profile import ExpertProfile, require_moe

        require_moe(info)
        experts = ExpertProfile.load(profile)
    plan = make_plan(info, budget, Request(ctx=ctx, kv_type=kv_type, n_ubatch=batch, cpu_moe_below=below), name=model,
                     profile=experts)
    if not plan.fits:
        raise EdgeAIError(impossible_message(plan))
    if apply:
        saved = registry.save_plan(model, plan.load_options())
        err.print(f"saved: chat, ask and serve load {model} with this plan ({saved})")
    bandwidth = measure_read_bandwidth()
    speed = plan.tokens_per_second(bandwidth)
    if as_json:
        data = plan.to_dict()
        data["speed"] = {"bandwidth_bytes_per_s": bandwidth, "bandwidth_source": "measured (numpy, one thread)",
                         "tokens_per_s_full_context": speed[0] if speed else None,
                         "tokens_per_s_empty_context": speed[1] if speed else None}
        print(json.dumps(data, indent=2))
        return
    _print_plan(plan, bandwidth, speed)


def _print_plan(plan, bandwidth: float, speed: tuple[float, float] | None) -> None:  # plan: runtime.planner.Plan
    table = Table("part", "size", "where", box=None, title=f"{plan.model} ({plan.architecture}, {plan.n_layer} layers)")
    cpu_experts = plan.cpu_moe_layers if plan.n_gpu_layers or plan.user_moe else plan.expert_layers
    all_gpu = bool(plan.gpu.budget) and plan.n_gpu_layers > plan.n_layer
    for role, n in plan.weights_by_role.items():
        where = "RAM" if not plan.gpu.budget or role == "embeddings" else ("VRAM" if all_gpu else "RAM+VRAM")
        if plan.rpc and role != "embeddings":
            where = "RAM+RPC" if plan.n_gpu_layers <= plan.n_layer else "RPC"
        if role == "experts":
            where = "disk (mmap)" if plan.mode == "mmap-paged" else (
                f"RAM: {len(cpu_experts)} of {len(plan.expert_layers)} layers" if plan.gpu.budget else "RAM")
        table.add_row(role.replace("_", " "), _size(n), where)
    if plan.repacked:
        table.add_row("repacked copies (CPU kernels)", _size(plan.repacked), "RAM")
    pools = [plan.cpu, plan.gpu, *plan.rpc_pools]
    table.add_row(f"KV cache ({plan.kv_type}, {plan.ctx} tokens)", _size(sum(p.kv_cache for p in pools)), "")
    table.add_row("compute + output buffers, runtime", _size(sum(p.compute for p in pools)), "")
    for label, pool in (("RAM", plan.cpu), ("VRAM", plan.gpu)):
        if pool.budget:
            table.add_row(f"total {label}", _size(pool.total), f"budget {_size(pool.budget)}")
    first = plan.n_layer + 1 - plan.n_gpu_layers  # llama.cpp's units: the blocks, then the output layer
    for helper, layers, pool in zip(plan.rpc, plan.rpc_layers, plan.rpc_pools):
        units = [f"blk.{u}" if u < plan.n_layer else "output" for u in range(first, first + layers)]
        held = f"{units[0]}..{units[-1]}" if len(units) > 1 else (units[0] if units else "nothing")
        table.add_row(f"total RPC {helper.server}", _size(pool.total), f"{held}, offers {_size(pool.budget)}")
        first += layers
    out.print(table)
    offloaded = f"RPC layers {plan.n_gpu_layers}" if plan.rpc else f"GPU layers {plan.n_gpu_layers}"
    out.print(f"mode: {plan.mode}; context {plan.ctx}; KV cache {plan.kv_type}; flash attention "
              f"{'on' if plan.flash_attn else 'off'}; {offloaded}")
    out.print(f"mmap {plan.mmap_reason}")
    if speed:
        out.print(f"expected decode: {speed[0]:.1f}-{speed[1]:.1f} tok/s (full to empty context) from a measured "
                  f"{bandwidth / 1e9:.1f} GB/s memory read bandwidth (one thread)")
    else:
        out.print("expected decode: not estimated (experts paged from disk: it depends on disk speed and on "
                  "how often the same experts come back)")
    out.print(f"llama.cpp: {plan.command()}")
    for note in plan.notes:
        out.print(f"note: {note}")


moe_app = typer.Typer(help="Mixture-of-experts tools.", no_args_is_help=True)


@moe_app.command("profile")
def moe_profile_cmd(
    model: Annotated[str, typer.Argument(help="model name or .gguf path (a mixture-of-experts model)")],
    text: Annotated[Path, typer.Option("--text", help="UTF-8 calibration text")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSON file (default: MODEL-experts.json)")] = None,
    ctx: Annotated[int, typer.Option("--ctx", help="tokens per window")] = 512,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="profile at most this many tokens")] = 16384,
) -> None:
    """Count which experts the router picks in each layer over the text; print a heatmap, save JSON."""
    from edge_ai.cli.toolchain import read_text
    from edge_ai.gguf_file import check_gguf
    from runtime.planner.profile import require_moe, run_profile

    with ProgressBar("assembling model", in_bytes=True) as bar:
        info = check_gguf(registry.resolve(model, progress=bar))
    require_moe(info)
    profile = run_profile(info, read_text(text), n_ctx=ctx, max_tokens=max_tokens)
    target = output or Path(f"{info.path.stem}-experts.json")
    profile.save(target)
    out.print(f"{profile.model}: {profile.tokens} tokens, {profile.n_expert_used} of {profile.n_expert} experts "
              f"per token; darker = picked more often (per layer)")
    for line in profile.heatmap():
        out.print(line)
    err.print(f"saved {target}")


@moe_app.command("prune")
def moe_prune_cmd(
    model: Annotated[str, typer.Argument(help="model name or .gguf path (a mixture-of-experts model)")],
    profile: Annotated[Path, typer.Option("--profile", help="expert profile JSON (edge-ai moe profile)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the pruned .gguf to write")],
    keep: Annotated[float, typer.Option("--keep", help="fraction of each layer's experts to keep")] = 0.75,
    text: Annotated[Optional[Path], typer.Option(
        "--text", help="UTF-8 text: report KL divergence and top-1 agreement against the full model")] = None,
    ctx: Annotated[int, typer.Option("--ctx", help="tokens per evaluation window")] = 512,
    force: Annotated[bool, typer.Option("--force", help="overwrite OUTPUT if it exists")] = False,
) -> None:
    """Drop the least-picked experts of every layer (the same count per layer): a smaller copy of MODEL."""
    from convert.moe_prune import prune_experts
    from edge_ai.gguf_file import check_gguf
    from runtime.planner.profile import ExpertProfile

    if output.exists() and not force:
        raise EdgeAIError(f"{output} exists; pass --force to overwrite it")
    with ProgressBar("assembling model", in_bytes=True) as bar:
        info = check_gguf(registry.resolve(model, progress=bar))
    report = prune_experts(info, ExpertProfile.load(profile), keep, output)
    out.print(f"{output}: {report.n_kept} of {report.n_expert} experts per layer, "
              f"{_size(report.bytes_after)} (was {_size(report.bytes_before)}); the kept experts served "
              f"{report.routing_share:.1%} of the profiled router picks")
    if text is None:
        return
    from convert.evaluate import evaluate
    from edge_ai.cli.toolchain import read_text

    result = evaluate(output, read_text(text), reference=info.path, ctx=ctx, speed=False)
    out.print(f"against the full model: KL divergence {result.kld_mean:.4f} (p99 {result.kld_p99:.4f}), "
              f"top-1 agreement {result.top1:.1f}%, perplexity {result.ppl:.2f} vs {result.reference_ppl:.2f}")


def register(app: typer.Typer) -> None:
    """Add `plan` and `moe` to the main `edge-ai` app."""
    app.command("plan")(plan_cmd)
    app.add_typer(moe_app, name="moe")

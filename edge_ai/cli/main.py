"""The `edge-ai` command line. Thin: every command calls into edge_ai/, runtime/ or tui/.

Expected failures are `EdgeAIError`s: printed as one `error: ...` line on stderr, exit code 1.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from edge_ai import __version__, registry
from edge_ai import config as config_mod
from edge_ai.cli import plan, redact, rpc, say, screen, toolchain, transcribe, voice
from edge_ai.console import ProgressBar, err, out
from edge_ai.errors import EdgeAIError
from edge_ai.paths import get_paths

app = typer.Typer(help="edge-ai: an offline AI assistant on your computer.", add_completion=False,
                  rich_markup_mode=None, pretty_exceptions_enable=False, no_args_is_help=False)
config_app = typer.Typer(help="Show and change settings.", no_args_is_help=True)
models_app = typer.Typer(help="Manage local GGUF models.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
toolchain.register(app)
plan.register(app)
voice.register(app)
say.register(app)
transcribe.register(app)
redact.register(app)
screen.register(app)
rpc.register(app)


# Flags shared by commands that generate text: (flag name, config key).
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="model name or .gguf path")]
SystemOpt = Annotated[Optional[str], typer.Option("--system", "-s", help="system prompt")]
TempOpt = Annotated[Optional[float], typer.Option("--temperature", "-t", help="sampling temperature")]
TopPOpt = Annotated[Optional[float], typer.Option("--top-p")]
TopKOpt = Annotated[Optional[int], typer.Option("--top-k")]
MinPOpt = Annotated[Optional[float], typer.Option("--min-p")]
RepeatOpt = Annotated[Optional[float], typer.Option("--repeat-penalty")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed")]
MaxTokOpt = Annotated[Optional[int], typer.Option("--max-tokens", "-n")]
StopOpt = Annotated[Optional[list[str]], typer.Option("--stop", help="stop string (repeatable)")]
ContextOpt = Annotated[Optional[int], typer.Option("--context", "-c", help="context window in tokens")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads")]
RpcOpt = Annotated[Optional[str], typer.Option(
    "--rpc", help="llama.cpp RPC servers host:port,... (edge-ai rpc-server) that hold part of the model's layers")]


def _rpc(servers: str | None) -> list[str] | None:
    """The --rpc list checked now, before any model is assembled or loaded."""
    from edge_ai.rpc_servers import parse_servers

    return None if servers is None else list(parse_servers(servers))


def _setup_logging() -> None:
    """Everything (llama.cpp included) goes to the log file, never to the terminal."""
    log_file = get_paths().log_file
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("llama.cpp").setLevel(logging.WARNING)  # its INFO is ~1400 lines per model load


def load_config(**flags: Any) -> config_mod.Config:
    """The effective config with CLI flags (by config key) applied."""
    return config_mod.load({k: v for k, v in flags.items() if v is not None})


def open_engine(cfg: config_mod.Config, *, vision: bool = False):  # -> runtime.llm.engine.Engine (imported lazily)
    """The configured engine, with a progress bar while a packaged model is assembled; with `vision`,
    its vision projector (screen.vision_mmproj) too."""
    from runtime.llm.loading import open_engine as load

    with ProgressBar("assembling model", in_bytes=True) as bar:
        return load(cfg, progress=bar, vision=vision)


@app.callback(invoke_without_command=True)
def main_callback(ctx: typer.Context,
                  version: Annotated[bool, typer.Option("--version", help="print the version")] = False,
                  model: ModelOpt = None, system: SystemOpt = None, temperature: TempOpt = None,
                  context: ContextOpt = None, threads: ThreadsOpt = None, rpc_servers: RpcOpt = None) -> None:
    """Start the terminal assistant (or answer stdin when it is not a terminal)."""
    _setup_logging()
    if version:
        out.print(f"edge-ai {__version__}")
        raise typer.Exit()
    flags = {"model.name": model, "chat.system_prompt": system, "sampling.temperature": temperature,
             "model.context": context, "model.threads": threads, "model.rpc": rpc_servers}
    if ctx.invoked_subcommand is not None:
        if any(v is not None for v in flags.values()):
            raise EdgeAIError(f"options before '{ctx.invoked_subcommand}' are for the chat app; "
                              f"put them after the command (edge-ai {ctx.invoked_subcommand} --help lists its own)")
        return
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        ask(question=None, model=model, system=system, temperature=temperature, context=context, threads=threads,
            rpc_servers=rpc_servers)
        return
    from tui.app import run_app

    run_app(load_config(**{**flags, "model.rpc": _rpc(rpc_servers)}))


@app.command()
def ask(
    question: Annotated[Optional[str], typer.Argument(help="the question; read from stdin when omitted")] = None,
    model: ModelOpt = None, system: SystemOpt = None, temperature: TempOpt = None, top_p: TopPOpt = None,
    top_k: TopKOpt = None, min_p: MinPOpt = None, repeat_penalty: RepeatOpt = None, seed: SeedOpt = None,
    max_tokens: MaxTokOpt = None, stop: StopOpt = None, context: ContextOpt = None, threads: ThreadsOpt = None,
    rpc_servers: RpcOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the reply and its metrics as JSON")] = False,
) -> None:
    """Answer one question, streaming the reply to stdout."""
    from runtime.llm.events import SamplingParams

    question = _question_with_input(question, _read_stdin())
    if not question:
        raise EdgeAIError("no question given; pass it as an argument or on stdin")
    cfg = load_config(**{
        "model.name": model, "chat.system_prompt": system, "sampling.temperature": temperature,
        "sampling.top_p": top_p, "sampling.top_k": top_k, "sampling.min_p": min_p,
        "sampling.repeat_penalty": repeat_penalty, "sampling.seed": seed, "sampling.max_tokens": max_tokens,
        "sampling.stop": stop, "model.context": context, "model.threads": threads, "model.rpc": _rpc(rpc_servers),
    })
    engine = open_engine(cfg)
    messages = [{"role": "system", "content": cfg.chat.system_prompt}] if cfg.chat.system_prompt else []
    messages.append({"role": "user", "content": question})
    done = print_reply(engine, messages, SamplingParams.from_settings(cfg.sampling), quiet=as_json)
    if as_json:
        print(json.dumps({"model": cfg.model.name, "reply": done.text, "finish_reason": done.reason,
                          "metrics": done.metrics.as_dict()}, indent=2))
    else:
        sys.stdout.write("\n")


def print_reply(engine: Any, messages: list[dict[str, Any]], sampling: Any, *, quiet: bool = False) -> Any:
    """Stream the model's reply to stdout (not when `quiet`) and return its DoneEvent; Ctrl-C stops it
    with exit code 130. `engine` is a runtime ChatEngine, `sampling` its SamplingParams."""
    from runtime.llm.events import DoneEvent

    done: DoneEvent | None = None
    try:
        for event in engine.chat(messages, sampling):
            if isinstance(event, DoneEvent):
                done = event
            elif not quiet:
                sys.stdout.write(event.text)
                sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        err.print("[stopped]")
        raise typer.Exit(130) from None
    assert done is not None
    return done


def _read_stdin() -> str:
    """What is piped in ("" from a terminal). Bytes that are not UTF-8 are replaced (U+FFFD), as
    a pasted binary should not end in a traceback; the model sees the readable rest."""
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    return sys.stdin.buffer.read().decode("utf-8", errors="replace")


def _question_with_input(question: str | None, piped: str) -> str:
    """The user message for `ask`: the question, then the piped text under it
    (`cat notes.txt | edge-ai ask "summarise this"`), or either alone."""
    parts = [part.strip() for part in (question or "", piped) if part and part.strip()]
    return "\n\n".join(parts)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="address to bind (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port to listen on")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="require this bearer token")] = None,
    model: ModelOpt = None, context: ContextOpt = None, threads: ThreadsOpt = None, rpc_servers: RpcOpt = None,
    queue_size: Annotated[Optional[int], typer.Option("--queue-size", help="waiting requests before 429")] = None,
    allow_unauthenticated: Annotated[bool, typer.Option(
        "--allow-unauthenticated", help="serve an address beyond loopback with no API key")] = False,
) -> None:
    """Serve an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models)."""
    from runtime.server import serve as run_server

    cfg = load_config(**{"server.host": host, "server.port": port, "server.api_key": api_key,
                         "model.name": model, "model.context": context, "model.threads": threads,
                         "model.rpc": _rpc(rpc_servers), "server.queue_size": queue_size})
    run_server(cfg, lambda: open_engine(cfg, vision=True), log=err, allow_unauthenticated=allow_unauthenticated)


@app.command()
def doctor() -> None:
    """Check this machine: CPU, memory, llama.cpp backends, audio, display, models."""
    from edge_ai.doctor import run_doctor
    from runtime.llamacpp.system import build
    from runtime.planner.plan import model_fit

    raise typer.Exit(run_doctor(out, *build(), fit=model_fit))


@config_app.command("show")
def config_show() -> None:
    """Print every setting with its effective value."""
    cfg = load_config()
    table = Table("setting", "value", "description", box=None)
    for key, field in config_mod.settings().items():
        table.add_row(key, repr(cfg.get(key)), field.metadata["help"])
    out.print(table)


@config_app.command("path")
def config_path() -> None:
    """Print where the config file lives."""
    print(get_paths().config_file)


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def config_set(key: str, value: str) -> None:
    """Store one setting in the config file, e.g. `edge-ai config set sampling.temperature 0.2`."""
    stored = config_mod.set_value(key, value)
    out.print(f"{key} = {stored!r}")


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List known models: name, architecture, parameters, quantization, size, context, format."""
    from edge_ai.chat_format import choose_format
    from edge_ai.gguf_file import read_gguf

    rows = []
    cfg = load_config()
    for entry in registry.list_models():
        row: dict[str, Any] = {"name": entry.name, "source": entry.source, "path": str(entry.path)}
        if entry.available:
            try:
                info = read_gguf(entry.path)
                row |= {"arch": info.architecture, "params": info.parameter_count, "quant": info.file_type_name,
                        "size": info.file_size, "context": info.context_length,
                        "chat_template": info.chat_template is not None,
                        "format": choose_format(info, registry.wanted_format(cfg.model.format, entry.name)).label}
            except EdgeAIError as exc:
                row["error"] = str(exc)
        rows.append(row)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "arch", "params", "quant", "size", "context", box=None)
    table.add_column("format", no_wrap=True)
    table.add_column("source")
    for r in rows:
        if "arch" in r:
            table.add_row(r["name"], r["arch"], _human_count(r["params"]), r["quant"], _human_bytes(r["size"]),
                          str(r["context"]), r["format"], r["source"])
        else:
            table.add_row(r["name"], "", "", "", "", "", "", r.get("error") or _unavailable(r))
    out.print(table)


@models_app.command("add")
def models_add(path: str, name: Annotated[Optional[str], typer.Option("--name")] = None,
               replace: Annotated[bool, typer.Option("--replace", help="re-point a name already in use")] = False,
               chat_format: Annotated[str, typer.Option(
                   "--format", help="prompt format: " + "|".join(config_mod.FORMAT_CHOICES))] = "auto",
               ) -> None:
    """Register a .gguf file under a name (checked first)."""
    from edge_ai.chat_format import choose_format
    from edge_ai.gguf_file import read_gguf

    entry = registry.add(path, name, replace=replace, chat_format=chat_format)
    choice = choose_format(read_gguf(entry.path), chat_format)
    out.print(f"added '{entry.name}' -> {entry.path} (format: {choice.label})")


@models_app.command("rm")
def models_rm(name: str) -> None:
    """Forget a model (a user's file is kept; a packaged model's assembled file is deleted)."""
    deleted = registry.remove(name)
    out.print(f"removed '{name}'" + (f" (deleted {deleted})" if deleted else ""))


@models_app.command("info")
def models_info(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """All GGUF metadata of a model, with a tensor count and type summary and its prompt format.

    Problems that would stop llama.cpp loading the file are printed last, one `warning:` line each
    on stderr, and the exit code is 1, so a script checking a download can rely on it."""
    from edge_ai.chat_format import choose_format
    from edge_ai.gguf_file import diagnose, read_gguf
    from edge_ai.kv_cache import kv_cache_bytes, recurrent_state_bytes

    with ProgressBar("assembling model", in_bytes=True) as bar:
        info = read_gguf(registry.resolve(name, progress=bar))
    cfg = load_config()
    choice = choose_format(info, registry.wanted_format(cfg.model.format, name))
    n_ctx = min(cfg.model.context, info.context_length or cfg.model.context)
    metadata = {k: (repr(v) if not isinstance(v, (str, int, float, bool, list)) else v)
                for k, v in info.metadata.items()}
    summary = {"path": str(info.path), "file_size": info.file_size, "gguf_version": info.version,
               "tensor_count": len(info.tensors), "parameters": info.parameter_count,
               "bits_per_weight": round(info.bits_per_weight, 3), "tensor_types": info.tensor_type_counts(),
               "format": choice.label, "format_reason": choice.reason, "context": n_ctx,
               "kv_cache_bytes": kv_cache_bytes(info, n_ctx, n_ubatch=cfg.model.batch, swa_full=cfg.model.swa_full),
               "recurrent_state_bytes": recurrent_state_bytes(info), "problems": diagnose(info)}
    if as_json:
        print(json.dumps({"summary": summary, "metadata": metadata}, indent=2, default=str))
    else:
        table = Table("key", "value", box=None)
        for key, value in metadata.items():
            text = str(value)
            table.add_row(key, text if len(text) < 200 else text[:200] + "...")
        out.print(table)
        for key, value in summary.items():
            out.print(f"{key}: {value}")
    for problem in summary["problems"]:
        err.print(f"warning: {problem}", soft_wrap=True)
    if summary["problems"]:
        raise typer.Exit(1)


def _unavailable(row: dict[str, Any]) -> str:
    if row["source"] == "user":
        return f"file missing: {row['path']}"
    return "package (assembled on first use)"


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: TiB returns")


def _human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def main() -> None:
    """Console-script entry point. An EdgeAIError becomes one `error:` line and exit 1; a usage
    error (unknown option, a value of the wrong type) one `error:` line naming the command's
    --help and exit 2, instead of click's usage block."""
    try:
        code = app(standalone_mode=False)
    except EdgeAIError as exc:
        err.print(f"error: {exc}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):  # click's ClickException
            raise
        message = exc.format_message()
        if "\n" in message:  # a group called bare: its help is the message
            exc.show()
        else:
            context = getattr(exc, "ctx", None)
            hint = f"; see '{context.command_path} --help'" if context is not None else ""
            err.print(f"error: {message.rstrip('.')}{hint}", soft_wrap=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)

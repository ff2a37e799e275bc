"""The model tinkerer's commands: `convert gguf|onnx|import-ct2`, `quantize`, `imatrix`, `eval`, `distill`.

Thin wrappers over `convert/`: parse flags, show progress bars, print a table or JSON. Heavy
modules (torch, transformers) are imported inside the commands, so `edge-ai ask` never pays for them.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edge_ai.console import ProgressBar, err, out
from edge_ai.errors import EdgeAIError

convert_app = typer.Typer(help="Convert Hugging Face checkpoints to local model formats.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print the result as JSON")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="CPU threads (0 = physical cores)")]
CtxOpt = Annotated[int, typer.Option("--ctx", help="tokens per evaluation window / calibration chunk")]
ChunksOpt = Annotated[Optional[int], typer.Option("--chunks", help="use at most this many windows / chunks")]
TextOpt = Annotated[Path, typer.Option("--text", help="UTF-8 text file (calibration or evaluation text)")]


def read_text(path: Path) -> str:
    try:
        return path.expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgeAIError(f"no such text file: {path}") from None
    except UnicodeDecodeError:
        raise EdgeAIError(f"{path} is not UTF-8 text; convert it first (e.g. iconv -t utf-8)") from None
    except OSError as exc:
        raise EdgeAIError(f"cannot read {path}: {exc.strerror}") from None


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


@convert_app.command("gguf")
def convert_gguf(
    src: Annotated[Path, typer.Argument(help="Hugging Face model directory (config.json, safetensors, tokenizer)")],
    dst: Annotated[Path, typer.Argument(help="output .gguf file, or a folder (then <name>-<outtype>.gguf)")],
    outtype: Annotated[str, typer.Option("--outtype", help="f32, f16, bf16 or q8_0")] = "f16",
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle",
                                               help="load .bin/.pt checkpoints (weights_only); they can run code")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Convert a Hugging Face checkpoint to GGUF (streamed shard by shard, written atomically)."""
    from convert.gguf import convert_checkpoint

    with ProgressBar("converting") as bar:
        report = convert_checkpoint(src, dst, outtype=outtype, allow_pickle=allow_pickle, progress=bar)
    if as_json:
        _print_json(report.to_dict())
        return
    out.print(f"wrote {report.output} ({report.architecture}, {report.tensor_count} tensors, "
              f"{report.parameter_count / 1e6:.1f}M parameters, {report.output_size / 2**20:.1f} MiB {report.outtype}, "
              f"{report.tokenizer} tokenizer, pre-tokenizer {report.pre_tokenizer}) in {report.seconds:.1f} s",
              highlight=False)
    for warning in report.warnings:
        err.print(f"warning: {warning}")


@convert_app.command("onnx")
def convert_onnx_cmd(
    src: Annotated[Path, typer.Argument(help="Hugging Face model directory (config.json, weights, tokenizer)")],
    out_dir: Annotated[Path, typer.Argument(help="output folder (refused if it exists, unless --force)")],
    task: Annotated[str, typer.Option("--task", help="auto, feature-extraction, text-generation-with-past or "
                                                     "automatic-speech-recognition")] = "auto",
    quantize: Annotated[str, typer.Option("--quantize", help="none, int8 (dynamic, per-channel), int4 "
                                                             "(MatMulNBits) or auto (fastest within budget)")] = "none",
    block_size: Annotated[int, typer.Option("--block-size", help="int4: values per scale")] = 32,
    accuracy_level: Annotated[int, typer.Option("--accuracy-level", help="int4: compute precision, 4 = int8, "
                                                                         "0 = fp32")] = 4,
    force: Annotated[bool, typer.Option("--force", help="replace an existing output folder")] = False,
    threads: ThreadsOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Export to ONNX with optimum, quantize with onnxruntime, check parity vs PyTorch and speed."""
    from convert.onnx import convert_onnx, format_table
    from convert.onnx.quantize import Int4Options

    with ProgressBar("converting") as bar:
        report = convert_onnx(src, out_dir, task=task, quantize=quantize, force=force, threads=threads,
                              int4=Int4Options(block_size=block_size, accuracy_level=accuracy_level), progress=bar)
    if as_json:
        _print_json(report.to_dict())
        return
    out.print(format_table(report))
    out.print(f"wrote {report.output} ({report.kept}); {report.decision}")
    for warning in report.warnings:
        err.print(f"warning: {warning}")


@convert_app.command("import-ct2")
def import_ct2_cmd(
    src: Annotated[Path, typer.Argument(help="CTranslate2 Whisper folder (faster-whisper's: model.bin, tokenizer.json)")],
    out_dir: Annotated[Path, typer.Argument(help="output transformers checkpoint folder")],
    force: Annotated[bool, typer.Option("--force", help="replace an existing output folder")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn a CTranslate2 Whisper model into a transformers checkpoint (then `convert onnx` can export it)."""
    from dataclasses import asdict

    from convert.onnx.ct2 import import_ct2

    report = import_ct2(src, out_dir, force=force)
    if as_json:
        _print_json(asdict(report))
        return
    out.print(f"wrote {report.output}: Whisper with {report.layers[0]} encoder / {report.layers[1]} decoder layers, "
              f"{report.parameters / 1e6:.1f}M parameters, in {report.seconds:.1f} s")


def quantize_cmd(
    src: Annotated[Path, typer.Argument(help="input GGUF (F32/F16/BF16, or quantized with requantize)")],
    dst: Annotated[Optional[Path], typer.Argument(help="output GGUF (default: input name with the type)")] = None,
    qtype: Annotated[Optional[str], typer.Option("--type", "-q", help="quantization type, e.g. Q4_K_M")] = None,
    imatrix: Annotated[Optional[Path], typer.Option("--imatrix", help="importance matrix (edge-ai imatrix)")] = None,
    tensor_type: Annotated[Optional[list[str]], typer.Option(
        "--tensor-type", help="per-tensor override PATTERN=TYPE (regex on tensor names; repeatable)")] = None,
    output_type: Annotated[Optional[str], typer.Option("--output-type", help="type for output.weight")] = None,
    embedding_type: Annotated[Optional[str], typer.Option("--embedding-type", help="type for token_embd")] = None,
    pure: Annotated[bool, typer.Option("--pure", help="every tensor in the main type (no k-quant mixes)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only print the size it would have")] = False,
    sweep_types: Annotated[Optional[str], typer.Option(
        "--sweep", help="comma-separated types to try and compare (needs --text)")] = None,
    text: Annotated[Optional[Path], typer.Option("--text", help="evaluation text for --sweep")] = None,
    max_size: Annotated[Optional[str], typer.Option(
        "--max-size", help="size budget for --sweep, e.g. 300MB: keep the most faithful (lowest KLD) type that "
                           "fits")] = None,
    max_kld: Annotated[Optional[float], typer.Option(
        "--max-kld", help="mean KL-divergence budget for --sweep: keep the smallest type within it (with "
                          "--max-size: the most faithful type within both)")] = None,
    ctx: CtxOpt = 512, chunks: ChunksOpt = None, threads: ThreadsOpt = 0,
    list_types: Annotated[bool, typer.Option("--list-types", help="list every quantization type")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Quantize a GGUF with llama.cpp (all types, per-tensor overrides, importance matrix), or sweep types."""
    from convert import quantize as q

    if list_types:
        if as_json:
            _print_json([{"type": t.name, "bpw": t.bpw, "needs_imatrix": t.needs_imatrix,
                          "description": t.description} for t in q.quant_types()])
        else:
            out.print(q.types_table())
        return
    if sweep_types:
        _sweep(src, dst, sweep_types, text, max_size, max_kld, ctx, chunks, threads, imatrix, as_json)
        return
    if qtype is None:
        raise EdgeAIError("say which type with --type (e.g. --type Q4_K_M); `--list-types` shows them all")
    overrides = [q.parse_tensor_type(spec) for spec in tensor_type or []]
    target = dst or q.default_output_path(src, qtype)
    with ProgressBar("quantizing") as bar:
        report = q.quantize(src, target, qtype, imatrix=imatrix, tensor_types=overrides, output_type=output_type,
                            embedding_type=embedding_type, pure=pure, threads=threads, dry_run=dry_run,
                            progress=bar)
    if as_json:
        _print_json(report.to_dict())
        return
    verb = "would be" if dry_run else f"wrote {target}:"
    out.print(f"{verb} {report.output_bytes / 2**20:.1f} MiB ({report.output_bpw:.2f} bpw, from "
              f"{report.input_bytes / 2**20:.1f} MiB) in {report.seconds:.1f} s; tensor types: "
              f"{report.tensor_type_counts}")
    for warning in report.warnings:
        err.print(f"warning: {warning}")


def _sweep(src: Path, dst: Optional[Path], types: str, text: Optional[Path], max_size: Optional[str],
           max_kld: Optional[float], ctx: int, chunks: Optional[int], threads: int, imatrix: Optional[Path],
           as_json: bool) -> None:
    """Quantize and evaluate each type, print the table, then keep the pick (or say why none fits).

    The table is printed before a failed pick is reported, so a sweep that found nothing within
    the budget still shows what every type measured."""
    from convert import evaluate as ev

    if text is None:
        raise EdgeAIError("--sweep needs evaluation text: pass --text FILE")
    budget = ev.parse_size(max_size) if max_size else None
    if dst is not None and budget is None and max_kld is None:
        raise EdgeAIError(f"--sweep writes {dst} only with a budget to pick the type by: add --max-size and/or "
                          "--max-kld, or leave out the output path to only compare the types")
    sample = read_text(text)
    dst = dst.expanduser() if dst is not None else None
    parent = (dst or src.expanduser()).parent
    try:
        tmp = tempfile.TemporaryDirectory(prefix="edge-ai-sweep-", dir=parent, ignore_cleanup_errors=True)
    except OSError as exc:
        raise EdgeAIError(f"cannot create the sweep's working folder in {parent}: {exc.strerror or exc}; "
                          "choose an output path in a writable folder") from None
    picked = None
    written = False
    error: EdgeAIError | None = None  # reported after the table
    with tmp as workdir:
        with ProgressBar("sweeping") as bar:
            rows = ev.sweep(src, [t for t in types.split(",") if t.strip()], sample,
                            workdir=Path(workdir), max_size=budget, ctx=ctx, max_chunks=chunks,
                            threads=threads, imatrix=imatrix, progress=bar)
        if budget is not None or max_kld is not None:
            try:
                picked = ev.pick(rows, budget, max_kld)
            except EdgeAIError as exc:
                error = exc
        if picked is not None and dst is not None:
            try:
                shutil.move(picked.path, dst)
                written = True
            except OSError as exc:  # shutil.Error too
                error = EdgeAIError(f"cannot write the picked {picked.type} to {dst}: {exc.strerror or exc}")
    if as_json:
        _print_json({"rows": [r.to_dict() for r in rows], "picked": picked.type if picked else None,
                     "output": str(dst) if written else None})
    else:
        out.print(ev.format_table(rows, picked))
        if picked is not None:
            where = f", written to {dst}" if written else "" if dst else " (pass an output path to keep it)"
            out.print(f"picked {picked.type}{where}")
    if error is not None:
        raise error


def imatrix_cmd(
    model: Annotated[Path, typer.Argument(help="GGUF model (ideally F16/BF16)")],
    text: TextOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="importance matrix file to write")],
    ctx: CtxOpt = 512, chunks: ChunksOpt = None, threads: ThreadsOpt = 0, as_json: JsonOpt = False,
) -> None:
    """Compute an importance matrix (and MoE expert usage) from calibration text, like llama-imatrix."""
    from convert.imatrix import compute_imatrix

    with ProgressBar("calibrating") as bar:
        report = compute_imatrix(model, read_text(text), output, ctx=ctx, threads=threads, max_chunks=chunks,
                                 progress=bar, dataset=str(text))
    if as_json:
        _print_json({"output": str(report.output), "chunks": report.chunks, "tokens": report.tokens,
                     "tensors": report.tensors, "seconds": report.seconds,
                     "expert_counts": {str(k): v.tolist() for k, v in report.expert_counts.items()}})
        return
    out.print(f"wrote {report.output}: {report.tensors} tensors from {report.chunks} chunks of {report.chunk_size} "
              f"tokens in {report.seconds:.1f} s")
    for layer, counts in report.expert_counts.items():
        out.print(f"  layer {layer} expert usage: {counts.tolist()}")


def eval_cmd(
    model: Annotated[Path, typer.Argument(help="GGUF model to evaluate")],
    text: TextOpt,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="reference GGUF for KL divergence / top-1")] = None,
    ctx: CtxOpt = 512, chunks: ChunksOpt = None, threads: ThreadsOpt = 0, as_json: JsonOpt = False,
) -> None:
    """Perplexity (llama-perplexity's method), KL divergence and top-1 agreement vs a reference, size, speed."""
    from convert.evaluate import evaluate

    with ProgressBar("evaluating") as bar:
        report = evaluate(model, read_text(text), reference=ref, ctx=ctx, threads=threads, max_chunks=chunks,
                          progress=bar)
    data = report.to_dict()
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        if value is not None:
            out.print(f"{key:>16}: {value:.4g}" if isinstance(value, float) else f"{key:>16}: {value}")


def distill_cmd(
    teacher: Annotated[Path, typer.Argument(help="teacher: a Hugging Face checkpoint folder, or a GGUF file "
                                                 "transformers can load (dequantized), e.g. gemma3-270m's")],
    data: Annotated[Path, typer.Option("--data", help="training data: UTF-8 text, or chat JSONL ({\"messages\": [...]} "
                                                      "per line; only assistant tokens are learned)")],
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="output folder (student-hf/, GGUF, report.json)")],
    student_layers: Annotated[Optional[int], typer.Option("--student-layers",
                                                          help="keep this many teacher layers, evenly spaced "
                                                               "(default: half)")] = None,
    keep_layers: Annotated[Optional[str], typer.Option("--keep-layers", help="keep exactly these teacher layers, "
                                                                             "e.g. 0,2,4")] = None,
    intermediate_size: Annotated[Optional[int], typer.Option("--intermediate-size",
                                                             help="narrower MLP: keep this many FFN channels per "
                                                                  "layer, the most active on the data")] = None,
    student: Annotated[Optional[Path], typer.Option("--student", help="an existing smaller checkpoint (same "
                                                                      "tokenizer) as the student, instead of "
                                                                      "teacher layers")] = None,
    steps: Annotated[int, typer.Option("--steps", help="optimizer steps")] = 200,
    batch_size: Annotated[int, typer.Option("--batch-size", help="rows per micro-batch")] = 4,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="micro-batches per step")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate")] = 5e-4,
    loss: Annotated[str, typer.Option("--loss", help="forward (KL), reverse (KL, MiniLLM) or jsd (GKD)")] = "forward",
    temperature: Annotated[float, typer.Option("--temperature", help="softmax temperature of both models")] = 2.0,
    alpha: Annotated[float, typer.Option("--alpha", help="weight of the divergence; 1-alpha goes to "
                                                         "cross-entropy on the data")] = 0.5,
    beta: Annotated[float, typer.Option("--beta", help="jsd: teacher's weight in the mixture")] = 0.5,
    max_length: Annotated[int, typer.Option("--max-length", help="tokens per training row")] = 256,
    no_pack: Annotated[bool, typer.Option("--no-pack", help="one document per row (padded) instead of "
                                                            "packing")] = False,
    seed: Annotated[int, typer.Option("--seed", help="data order and initial RNG")] = 0,
    grad_checkpointing: Annotated[bool, typer.Option("--grad-checkpointing", help="recompute the student's "
                                                                                  "activations in backward (less "
                                                                                  "memory, slower)")] = False,
    autocast: Annotated[str, typer.Option("--autocast", help="fp32, or bf16: forward passes in bfloat16 "
                                                             "autocast")] = "fp32",
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="steps between checkpoints "
                                                                             "(0: none)")] = 50,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint in -o")] = False,
    quantize_type: Annotated[str, typer.Option("--quantize", help="llama.cpp type of the shipped GGUF")] = "Q4_K_M",
    outtype: Annotated[str, typer.Option("--outtype", help="GGUF float type before quantizing")] = "f16",
    accept_kld: Annotated[Optional[float], typer.Option("--accept-kld", help="write the GGUF only if its KLD to "
                                                                             "the teacher is within this")] = None,
    eval_text: Annotated[Optional[Path], typer.Option("--eval-text", help="held-out text for the report "
                                                                          "(default: the training data)")] = None,
    eval_ctx: CtxOpt = 128,
    lora: Annotated[int, typer.Option("--lora", help="train LoRA adapters of this rank instead of all weights "
                                                     "(merged before export; 0: full fine-tune)")] = 0,
    cache_topk: Annotated[int, typer.Option("--cache-topk", help="precompute the teacher's top-K logits to disk "
                                                                 "(fp16 + int32 shards) and free it before training; "
                                                                 "forward KL only (0: teacher stays live)")] = 0,
    seq_kd: Annotated[bool, typer.Option("--seq-kd", help="sequence-level KD: the teacher (run by our llama.cpp "
                                                         "engine) answers the data's prompts first and the student "
                                                         "learns its answers (cached in -o, resumable)")] = False,
    seq_kd_max_tokens: Annotated[int, typer.Option("--seq-kd-max-tokens", help="longest teacher answer "
                                                                               "(tokens)")] = 128,
    processes: Annotated[int, typer.Option("--processes", help="train as N data-parallel processes on this "
                                                               "machine (accelerate; --batch-size is per "
                                                               "process)")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Distill TEACHER into a smaller student (a subset of its layers, or --student), then ship it as a quantized GGUF."""
    from convert.distill.launch import in_launched_process, run_as_processes

    if processes != 1 and not in_launched_process():
        raise typer.Exit(run_as_processes(processes, ["-m", "edge_ai", *sys.argv[1:]]))
    from convert.distill.losses import LossOptions
    from convert.distill.pipeline import DistillOptions, distill
    from convert.distill.train import TrainOptions

    train_options = TrainOptions(steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, seed=seed,
                                 checkpoint_every=checkpoint_every, grad_checkpointing=grad_checkpointing,
                                 autocast=autocast,
                                 loss=LossOptions(loss, temperature=temperature, alpha=alpha, beta=beta))
    options = DistillOptions(train=train_options, student_layers=student_layers, keep_layers=keep_layers,
                             max_length=max_length, pack=not no_pack, outtype=outtype, quantize=quantize_type,
                             accept_kld=accept_kld, eval_ctx=eval_ctx, lora_rank=lora,
                             cache_topk=cache_topk, intermediate_size=intermediate_size, student=student,
                             seq_kd=seq_kd, seq_kd_max_tokens=seq_kd_max_tokens)
    text = read_text(eval_text) if eval_text else None
    with ProgressBar("distilling") as bar:
        report = distill(teacher, data, out_dir, options, resume=resume, eval_text=text, progress=bar)
    if report is None:
        return  # a secondary training process: the first one reports
    if as_json:
        _print_json(report.to_dict())
    else:
        out.print(_distill_table(report))
    if not report.accepted:
        raise EdgeAIError(f"the student's KLD to the teacher is {report.models['student']['kld_mean']:.4f}, "
                          f"{report.missed_by:.4f} over --accept-kld {report.accept_kld}; no GGUF written "
                          f"(see {out_dir / 'report.json'}); train longer, keep more layers or quantize less")
    if not as_json:
        out.print(f"wrote {report.output}", highlight=False)


def _distill_table(report: Any) -> Any:
    from rich.table import Table

    shape = f"layers {','.join(map(str, report.keep_layers))}" if report.keep_layers is not None else "own student"
    table = Table(title=f"distilled ({shape}, {report.quantize})")
    for column in ("model", "size MiB", "KLD", "top-1 %", "PPL", "decode tok/s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, row in report.models.items():
        table.add_row(name, f"{row['size_mib']:.1f}", f"{row.get('kld_mean') or 0:.4f}", f"{row.get('top1') or 0:.1f}",
                      f"{row['ppl']:.2f}", f"{row.get('decode_tps') or 0:.1f}")
    return table


def register(app: typer.Typer) -> None:
    """Add the toolchain commands to the main `edge-ai` app."""
    app.add_typer(convert_app, name="convert")
    app.command("quantize")(quantize_cmd)
    app.command("imatrix")(imatrix_cmd)
    app.command("eval")(eval_cmd)
    app.command("distill")(distill_cmd)

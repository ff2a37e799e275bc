"""`edge-ai distill` end to end: teacher -> student -> GGUF -> quantized GGUF -> report, with a gate.

Each stage reuses the toolchain's own parts (the GGUF converter, the llama.cpp quantizer, the
evaluator's KLD / top-1 / PPL), so the numbers in the report are the ones `edge-ai eval` would
print. The distilled student is judged beside the undistilled initialisation, quantized the same
way, so the report shows what the training bought, not only where the student ended.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convert.distill.data import Example, load_examples, make_blocks
from convert.distill.gguf_teacher import load_gguf_teacher, write_spm_model
from convert.distill.launch import is_main_process, wait_for_everyone
from convert.distill.logit_cache import MANIFEST, LogitCache, write_cache
from convert.distill.lora import add_lora, merge_lora
from convert.distill.narrow_mlp import narrow_mlp
from convert.distill.seqkd import answer_examples, generate_answers, read_prompts
from convert.distill.student import build_student, decoder_layers, parse_keep_layers, uniform_layers
from convert.distill.tokenizers import check_same_tokenizer, load_tokenizer
from convert.distill.train import ProgressFn, StepLog, TrainOptions, train
from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_write_text

CHECKPOINTS = "checkpoints"
STUDENT_HF = "student-hf"
WORK = ".work"  # intermediate GGUFs, removed at the end
REPORT = "report.json"
LOGIT_CACHE = "logit-cache"
SEQ_KD = "teacher-answers.jsonl"
STUDENT_ADVICE = ("logit KD needs one vocabulary: pick a student that uses the teacher's tokenizer (e.g. a smaller "
                  "model of the same family), or drop --student to build one from the teacher's own layers")


@dataclass(frozen=True)
class DistillOptions:
    train: TrainOptions
    student_layers: int | None = None  # uniform subset of this many teacher layers (default: half)
    keep_layers: str | None = None     # or exactly these teacher layers, e.g. "0,2,4"
    max_length: int = 256              # tokens per training row
    pack: bool = True                  # concatenate documents into full rows (no padding)
    outtype: str = "f16"               # GGUF float type before quantization
    quantize: str = "Q4_K_M"           # llama.cpp type of the shipped file
    accept_kld: float | None = None    # ship the GGUF only if its KLD to the teacher is within this
    eval_ctx: int = 128                # evaluator window (tokens)
    eval_chunks: int | None = 8        # evaluator windows at most
    lora_rank: int = 0                 # > 0: train LoRA adapters of this rank (merged before export)
    cache_topk: int = 0                # > 0: precompute the teacher's top-k logits to disk, then free it
    intermediate_size: int | None = None  # narrower MLP: keep this many of each layer's FFN channels
    student: Path | None = None        # an existing smaller checkpoint as the student (instead of a layer subset)
    seq_kd: bool = False               # train on the teacher's own answers to the data's prompts
    seq_kd_max_tokens: int = 128       # longest teacher answer (tokens)


@dataclass
class DistillReport:
    teacher: str
    output: str | None                 # the shipped GGUF (None when the gate refused it)
    keep_layers: list[int] | None      # the teacher layers the student started from (None: --student)
    steps: list[dict[str, Any]]
    models: dict[str, dict[str, Any]]  # teacher / init / student evaluations (evaluator's fields)
    quantize: str
    accept_kld: float | None
    accepted: bool
    missed_by: float | None = None     # student KLD - accept_kld when refused
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distill(teacher: Path, data: Path, out: Path, options: DistillOptions, *, resume: bool = False,
            eval_text: str | None = None, progress: ProgressFn | None = None) -> DistillReport | None:
    """Distill `teacher` (a HF folder, or a GGUF file transformers can load) on `data` into `out/`
    (student-hf/, student-<TYPE>.gguf, report.json). In a group of launched processes all train,
    the first one writes and returns the report, the others return None."""
    if options.lora_rank < 0:
        raise EdgeAIError(f"--lora {options.lora_rank}: give a rank of 1 or more (0 trains all weights)")
    teacher_path = Path(teacher).expanduser()
    gguf_teacher = teacher_path.suffix == ".gguf" and teacher_path.is_file()
    tokenizer, teacher_model = load_gguf_teacher(teacher_path) if gguf_teacher else _load_teacher(teacher_path)
    if options.student is not None:
        keep, student = None, _existing_student(Path(options.student).expanduser(), options, tokenizer, teacher_model)
    else:
        n_layers = len(decoder_layers(teacher_model))
        keep = parse_keep_layers(options.keep_layers, n_layers) if options.keep_layers else \
            uniform_layers(n_layers, options.student_layers or max(1, n_layers // 2))
        student = build_student(teacher_model, keep)
    main = is_main_process()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if options.seq_kd:
        teacher_gguf = teacher_path if gguf_teacher else out / WORK / f"teacher-{options.outtype}.gguf"
        examples = _teacher_answers(teacher_path, teacher_gguf, data, tokenizer, out / SEQ_KD, options, progress)
    else:
        examples = load_examples(data, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    blocks = make_blocks(examples, options.max_length, pack=options.pack, pad_id=pad or 0)
    if options.intermediate_size:
        narrow_mlp(student, options.intermediate_size, blocks)
    init_dir = out / WORK / "init-hf"
    if main:
        _save_hf(student, tokenizer, init_dir, teacher_path if gguf_teacher else None)
    teacher_source = teacher_model
    if options.cache_topk:
        teacher_source = _logit_cache(teacher_model, blocks, options.cache_topk, out / LOGIT_CACHE, resume)
        del teacher_model  # training reads the cache: the teacher's memory is free for the student
    if options.lora_rank:
        student = add_lora(student, options.lora_rank)
    log = train(teacher_source, student, blocks, options.train, out / CHECKPOINTS, resume=resume, progress=progress)
    if not main:
        return None  # the first process exports and reports
    if options.lora_rank:
        student = merge_lora(student)
    _save_hf(student, tokenizer, out / STUDENT_HF, teacher_path if gguf_teacher else None)
    check_same_tokenizer(tokenizer, load_tokenizer(out / STUDENT_HF))  # what ships reads text as the teacher does
    del teacher_source, student
    text = eval_text if eval_text is not None else _eval_text(data, examples, tokenizer)
    report = _ship(teacher_path, gguf_teacher, init_dir, out, options, text, keep, log)
    atomic_write_text(out / REPORT, json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    shutil.rmtree(out / WORK, ignore_errors=True)
    return report


def _existing_student(path: Path, options: DistillOptions, tokenizer: Any, teacher: Any) -> Any:
    """`--student PATH`: a smaller checkpoint trained as it is, if it reads text as the teacher does."""
    chosen = [flag for flag, value in (("--student-layers", options.student_layers), ("--keep-layers",
              options.keep_layers), ("--intermediate-size", options.intermediate_size)) if value]
    if chosen:
        raise EdgeAIError(f"{chosen[0]} shapes a student built from the teacher; with --student {path} the student "
                          f"is that checkpoint as it is: drop {chosen[0]} or --student")
    if not (path / "config.json").is_file():
        raise EdgeAIError(f"--student {path} is not a Hugging Face checkpoint folder (no config.json); point at the "
                          "student's folder")
    check_same_tokenizer(tokenizer, load_tokenizer(path), advice=STUDENT_ADVICE)
    try:
        student = _load_model(path)
    except (OSError, ValueError) as exc:
        raise EdgeAIError(f"cannot load --student {path}: {str(exc).splitlines()[0]}") from None
    t_rows, s_rows = teacher.config.vocab_size, student.config.vocab_size
    if t_rows != s_rows:
        raise EdgeAIError(f"the teacher has {t_rows} output rows and the student {s_rows}, so their logits cannot "
                          "be compared token by token; " + STUDENT_ADVICE)
    return student


def _teacher_answers(teacher: Path, teacher_gguf: Path, data: Path, tokenizer: Any, cache: Path,
                     options: DistillOptions, progress: ProgressFn | None) -> list[Example]:
    """Sequence-level KD data: the data's prompts with the teacher's answers, generated by the first
    process with our llama.cpp engine (a HF teacher is converted to GGUF for it first)."""
    prompts = read_prompts(data)
    answers = None
    if is_main_process():
        if not teacher_gguf.is_file():
            _convert_teacher(teacher, teacher_gguf, options.outtype)
        answers = generate_answers(teacher_gguf, prompts, cache, max_tokens=options.seq_kd_max_tokens,
                                   progress=progress)
    wait_for_everyone()
    if answers is None:  # the other processes read what the first one wrote
        answers = generate_answers(teacher_gguf, prompts, cache, max_tokens=options.seq_kd_max_tokens)
    return answer_examples(prompts, answers, tokenizer)


def _convert_teacher(teacher: Path, gguf: Path, outtype: str) -> list[str]:
    """Convert a HF teacher to GGUF (for the engine and the evaluator); returns the converter's warnings."""
    from convert.gguf import convert_checkpoint

    gguf.parent.mkdir(parents=True, exist_ok=True)
    return convert_checkpoint(teacher, gguf, outtype=outtype).warnings


def _logit_cache(teacher: Any, blocks: list, k: int, folder: Path, resume: bool) -> LogitCache:
    """The cache for these blocks: reused on --resume when it matches, else computed now (by the
    first process of a group; the others wait for it)."""
    reuse = resume and (folder / MANIFEST).is_file() and LogitCache(folder, blocks).k == k
    wait_for_everyone()  # every process has decided before the first one replaces anything
    if not reuse and is_main_process():
        write_cache(teacher, blocks, k, folder)
    wait_for_everyone()
    return LogitCache(folder, blocks)


def _load_teacher(path: Path) -> tuple[Any, Any]:
    """(tokenizer, float32 model) of a HF checkpoint folder."""
    if not (path / "config.json").is_file():
        raise EdgeAIError(f"{path} is neither a GGUF file nor a Hugging Face checkpoint folder (no config.json); "
                          "point at the teacher's folder or .gguf")
    return load_tokenizer(path), _load_model(path)


def _load_model(path: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar shows progress; theirs would break the one-line errors
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _save_hf(model: Any, tokenizer: Any, folder: Path, gguf_teacher: Path | None) -> None:
    """save_pretrained into a temp folder renamed into place: never half a checkpoint under `folder`.
    A GGUF teacher's vocabulary is written as tokenizer.model for the converter."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if gguf_teacher is not None:
            write_spm_model(gguf_teacher, tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgeAIError(f"cannot write {folder}: {exc.strerror}; free some space or choose another -o") from None


def _eval_text(data: Path, examples: list, tokenizer: Any) -> str:
    """Without --eval-text: the training text itself (chat data decoded back to text)."""
    if data.suffix != ".jsonl":
        return data.read_text(encoding="utf-8")
    return "\n".join(tokenizer.decode(ex.ids) for ex in examples)


def _ship(teacher: Path, gguf_teacher: bool, init_dir: Path, out: Path, options: DistillOptions, text: str,
          keep: list[int] | None, log: list[StepLog]) -> DistillReport:
    """Convert init and student (and a HF teacher) to GGUF, quantize init and student, evaluate all
    three against the teacher (a GGUF teacher is its own reference: the model the user runs), and
    move the student's GGUF into place only if it passes the gate."""
    from convert.evaluate import evaluate_many
    from convert.gguf import convert_checkpoint
    from convert.quantize import quantize

    work = out / WORK
    qtype = options.quantize.upper()
    warnings: list[str] = []
    teacher_gguf = teacher
    if not gguf_teacher:
        teacher_gguf = work / f"teacher-{options.outtype}.gguf"
        if not teacher_gguf.is_file():  # --seq-kd converted it already
            warnings += _convert_teacher(teacher, teacher_gguf, options.outtype)
    quantized = {}
    for name, folder in (("init", init_dir), ("student", out / STUDENT_HF)):
        f16 = work / f"{name}-{options.outtype}.gguf"
        convert_checkpoint(folder, f16, outtype=options.outtype)
        quantized[name] = work / f"{name}-{qtype}.gguf"
        quantize(f16, quantized[name], qtype)
        f16.unlink()
    rows = evaluate_many([teacher_gguf, quantized["init"], quantized["student"]], text, reference=teacher_gguf,
                         ctx=options.eval_ctx, max_chunks=options.eval_chunks)
    models = {name: row.to_dict() for name, row in zip(("teacher", "init", "student"), rows)}
    kld = models["student"]["kld_mean"]
    accepted = options.accept_kld is None or kld <= options.accept_kld
    output = None
    if accepted:
        output = out / f"student-{qtype}.gguf"
        quantized["student"].replace(output)
        models["student"]["model"] = str(output)
    return DistillReport(teacher=str(teacher), output=str(output) if output else None, keep_layers=keep,
                         steps=[asdict(step) for step in log],
                         models=models, quantize=qtype, accept_kld=options.accept_kld, accepted=accepted,
                         missed_by=None if accepted else kld - options.accept_kld, warnings=warnings)

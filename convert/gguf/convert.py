"""Convert a local Hugging Face checkpoint (safetensors) to one GGUF file.

    report = convert_checkpoint(Path("Qwen2.5-0.5B-Instruct"), Path("qwen.gguf"), outtype="q8_0")

1. Read config.json and every shard *header*; pick the architecture module by config.json.
2. Plan: rewrite the listing (MoE stacking...), map names with gguf-py's TensorNameMap, check every
   shape against config.json and that no tensor is missing, choose each tensor's output type.
3. Read the tokenizer files.
4. Write through GGUFWriter's streaming API into a temp file beside the target: metadata and the
   tensor table first (sizes are known from the plan), then one tensor at a time in shard order,
   so memory stays near the largest tensor. Check the result with `check_gguf`, then rename it
   into place. Any failure leaves nothing behind.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf.constants import MODEL_TENSOR as T
from gguf.constants import TENSOR_NAMES
from gguf.constants import GGMLQuantizationType as Q

from convert.gguf.checkpoint import Checkpoint, open_checkpoint, read_model_config
from convert.gguf.hparams import ModelConfig, complete_config
from convert.gguf.registry import Architecture, find_architecture
from convert.gguf.tensors import (
    DEFAULT_SHAPES,
    F16_MAX,
    OUTTYPES,
    F16Overflow,
    Transform,
    VirtualTensor,
    encode,
    is_layout_only,
    source_dtype,
    storage_type,
)
from convert.gguf.vocab import Vocabulary, load_vocabulary
from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_path, check_free_space
from edge_ai.gguf_file import check_gguf, tensor_nbytes

Progress = Callable[[int, int], None]
_HEADER_ALLOWANCE = 64 * 1024 * 1024  # room for metadata (vocabulary) in the free-space check


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion produced."""

    architecture: str  # GGUF architecture, e.g. "llama"
    hf_architecture: str  # the config.json name that selected it, e.g. "MistralForCausalLM"
    output: Path
    outtype: str
    tensor_count: int
    parameter_count: int
    output_size: int  # bytes
    source_size: int  # bytes of the checkpoint's weight files
    tokenizer: str  # llama.cpp tokenizer model: "gpt2" (BPE) or "llama" (SentencePiece)
    pre_tokenizer: str  # llama.cpp pre-tokenizer name ("default" for SentencePiece)
    seconds: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output"] = str(self.output)
        data["warnings"] = list(self.warnings)
        return data


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: GGUF name, where its data comes from, and how it is stored."""

    name: str
    kind: T | None
    shape: tuple[int, ...]  # numpy order
    qtype: Q
    source: VirtualTensor | None  # None for tensors computed from config (`data`)
    data: np.ndarray | None = None
    transform: Transform | None = None
    fallback: bool = False  # 16-bit because Q8_0 (the outtype) cannot hold rows of this length

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.qtype.name)

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    def build(self, config: ModelConfig) -> np.ndarray:
        """Read, transform and encode the tensor (the only moment its data is in memory).

        Without a transform, or with one that only moves values, the data stays in its stored type
        (bf16/f16 are not widened to a float32 copy); other transforms get float32."""
        if self.source is None:
            data, dtype = self.data, "F32"
        elif is_layout_only(self.transform):
            data, dtype = self.source.load()
        else:
            data, dtype = self.source.build(), "F32"
        if self.transform is not None:
            data = self.transform(data, config)
        stored = self.shape if dtype != "MXFP4" else tuple(gguf.quant_shape_to_byte_shape(self.shape, Q.MXFP4))
        if data.shape != stored:
            origin = self.source.name if self.source is not None else self.name
            raise EdgeAIError(f"tensor {origin} came out with shape {list(data.shape)} instead of "
                              f"{list(stored)}; the checkpoint is corrupt")
        try:
            return encode(data, dtype, self.qtype)
        except F16Overflow as exc:
            why = (f" stays F16 in a q8_0 conversion (its rows of {self.shape[-1]} values do not divide into "
                   "Q8_0's 32-value blocks) but" if self.fallback else "")
            raise EdgeAIError(f"tensor {self.name}{why} has values up to {exc.max_abs:.3g}, beyond float16's range "
                              f"(±{F16_MAX:.0f}); convert with --outtype bf16 or f32") from None


def convert_checkpoint(src: Path, out: Path, *, outtype: str = "f16", allow_pickle: bool = False,
                       progress: Progress | None = None) -> ConversionReport:
    """Convert the HF model folder `src` to the GGUF file `out` (or into `out` if it is a folder).

    `outtype`: f32 | f16 | bf16 | q8_0 (2-D weights; norms, biases and 1-D tensors stay F32).
    `allow_pickle`: accept PyTorch pickle weights (.bin/.pt), loaded with torch.load(weights_only=True).
    `progress(done, total)`: called with bytes of tensor data written so far and the total.
    Raises EdgeAIError (one line naming the file or tensor) on bad input; no partial output is left.
    """
    started = time.perf_counter()
    if outtype not in OUTTYPES:
        raise EdgeAIError(f"unknown outtype {outtype!r}; choose one of {', '.join(OUTTYPES)}")
    src = Path(src).expanduser()
    arch, hf_name = find_architecture(read_model_config(src))
    checkpoint = open_checkpoint(src, allow_pickle=allow_pickle)
    config = complete_config(checkpoint.config)
    warnings, plan, metadata = _prepare(checkpoint, arch, config, outtype)
    fallback = [p for p in plan if p.fallback]
    if fallback:
        warnings.append(f"{len(fallback)} tensor(s) have rows that are not a multiple of 32 and stay 16-bit "
                        f"(e.g. {fallback[0].name} as {fallback[0].qtype.name})")
    n_vocab = next(p.shape[0] for p in plan if p.kind == T.TOKEN_EMBD)
    vocab = load_vocabulary(src, config, n_vocab)
    if arch.vocab_hook is not None:
        arch.vocab_hook(vocab, config)
    warnings.extend(vocab.warnings)

    name = _model_name(src.resolve().name, vocab, warnings)
    target = _output_path(src, Path(out).expanduser(), outtype)
    total = sum(p.nbytes for p in plan)
    with atomic_path(target) as tmp:
        check_free_space(target, total + _HEADER_ALLOWANCE)
        _write_gguf(tmp, arch, config, plan, metadata, vocab, name, outtype, progress, total)
        check_gguf(tmp)
        size = tmp.stat().st_size
    return ConversionReport(
        architecture=arch.name, hf_architecture=hf_name, output=target, outtype=outtype,
        tensor_count=len(plan), parameter_count=sum(p.n_elements for p in plan), output_size=size,
        source_size=checkpoint.source_bytes, tokenizer=vocab.model, pre_tokenizer=vocab.pre,
        seconds=time.perf_counter() - started, warnings=tuple(warnings))


# ---------------------------------------------------------------- planning

Metadata = list[tuple[str, Any, gguf.GGUFValueType]]


def _prepare(checkpoint: Checkpoint, arch: Architecture, config: ModelConfig,
             outtype: str) -> tuple[list[str], list[PlannedTensor], Metadata]:
    """Run the architecture's checks, plan the tensors and compute the metadata: everything that
    reads config.json, so a value it omits (and transformers could not supply) is refused before
    any weight is read. A refusal that follows such an omission reports the omission, its cause."""
    try:
        warnings = [warning for check in arch.checks for warning in check(config)]
        plan = plan_tensors(checkpoint, arch, config, outtype)
        metadata = _metadata(arch, config)
    except EdgeAIError:
        config.check_defaults_known()
        raise
    config.check_defaults_known()
    return warnings, plan, metadata


def _metadata(arch: Architecture, config: ModelConfig) -> Metadata:
    """The architecture's GGUF key/value rows for this config (rows whose value is None are left out)."""
    rows = []
    for hparam in arch.hparams:
        value = hparam.value(config)
        if value is not None:
            rows.append((hparam.key.format(arch=arch.name), value, hparam.type))
    return rows


def plan_tensors(checkpoint: Checkpoint, arch: Architecture, config: ModelConfig,
                 outtype: str) -> list[PlannedTensor]:
    """Every output tensor with its final name, shape and type, in write order; checks shapes
    against config.json and that nothing is missing, without reading any weight."""
    n_layer = config.n_layer
    name_map = gguf.get_tensor_name_map(arch.gguf_arch, n_layer)
    ignore = [re.compile(p) for p in arch.ignore]
    tensors = {n: VirtualTensor.of(t) for n, t in checkpoint.tensors.items()
               if not any(r.search(n) for r in ignore)}
    for regroup in arch.regroup:
        tensors = regroup(tensors, config)

    tied = config.tie_word_embeddings
    planned: dict[str, PlannedTensor] = {}
    origin: dict[str, str] = {}
    for name, tensor in tensors.items():
        found = name_map.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise _unmapped(name, tensor, arch, n_layer)
        kind, gguf_name = found
        if source_dtype(tensor) == "U8":
            raise EdgeAIError(f"tensor {name} in {tensor.where} is stored as raw bytes (a quantized format) that "
                              f"llama.cpp's {arch.name} converter does not read; use the model's float checkpoint")
        if kind == T.OUTPUT and tied:
            continue  # llama.cpp reuses token_embd when output is absent
        if gguf_name in planned:
            raise EdgeAIError(f"tensors {origin[gguf_name]} and {name} both map to {gguf_name}; "
                              "remove the duplicate from the checkpoint")
        _check_shape(name, tensor, kind, gguf_name, arch, config)
        qtype = storage_type(gguf_name, kind, tensor.shape, outtype, arch.keep_f32, source_dtype(tensor))
        planned[gguf_name] = PlannedTensor(
            name=gguf_name, kind=kind, shape=tensor.shape, source=tensor, qtype=qtype,
            transform=arch.transforms.get(kind), fallback=outtype == "q8_0" and qtype in (Q.F16, Q.BF16))
        origin[gguf_name] = name

    _check_complete(planned, arch, config, name_map, list(checkpoint.tensors))

    extras: list[PlannedTensor] = []
    for make in arch.extra_tensors:
        for kind, data in make(config):
            name = TENSOR_NAMES[kind] + ".weight"
            data = np.ascontiguousarray(data, dtype=np.float32)
            extras.append(PlannedTensor(name=name, kind=kind, shape=data.shape, source=None, data=data,
                                        qtype=storage_type(name, kind, data.shape, outtype, arch.keep_f32)))
    ordered = sorted(planned.values(), key=lambda p: (max(s.shard_index for s in p.source.sources),
                                                      min(s.order for s in p.source.sources)))
    return extras + ordered


def _unmapped(name: str, tensor: VirtualTensor, arch: Architecture, n_layer: int) -> EdgeAIError:
    block = re.search(r"\.(\d+)\.", name)
    if block and int(block.group(1)) >= n_layer:
        return EdgeAIError(f"tensor {name} in {tensor.where} belongs to block {block.group(1)} but config.json "
                           f"num_hidden_layers is {n_layer}; the checkpoint does not match config.json")
    return EdgeAIError(f"tensor {name} in {tensor.where} has no GGUF equivalent in llama.cpp's {arch.name} "
                       "architecture; the checkpoint does not match config.json")


def _check_shape(name: str, tensor: VirtualTensor, kind: T, gguf_name: str, arch: Architecture,
                 config: ModelConfig) -> None:
    rule = arch.shapes.get(kind) or DEFAULT_SHAPES.get(kind)
    if rule is None:
        return
    expected = rule(config)
    if gguf_name.endswith(".bias") and len(expected) >= 2:
        expected = expected[:-1]
    if tensor.shape != expected:
        raise EdgeAIError(f"tensor {name} in {tensor.where} has shape {list(tensor.shape)} but config.json implies "
                          f"{list(expected)}; the weights do not match config.json")


# Kinds llama.cpp stores as a bias alone (DeepSeek-V3's expert-score correction).
_BIAS_ONLY = frozenset({T.FFN_EXP_PROBS_B})


def _check_complete(planned: dict[str, PlannedTensor], arch: Architecture, config: ModelConfig,
                    name_map: gguf.TensorNameMap, source_names: list[str]) -> None:
    required = [(TENSOR_NAMES[T.TOKEN_EMBD], ".weight"), (TENSOR_NAMES[arch.final_norm], ".weight")]
    if config.tie_word_embeddings is False:
        required.append((TENSOR_NAMES[T.OUTPUT], ".weight"))
    for bid in range(config.n_layer):
        kinds = arch.block_tensors + (arch.layer_tensors(config, bid) if arch.layer_tensors else ())
        required += [(TENSOR_NAMES[kind].format(bid=bid), ".bias" if kind in _BIAS_ONLY else ".weight")
                     for kind in kinds]
    for base, suffix in required:
        if base + suffix not in planned:
            raise EdgeAIError(f"the checkpoint has no tensor {_hf_name_for(base, name_map, source_names, suffix)} "
                              f"(GGUF {base}{suffix}); download the complete model")


def _hf_name_for(gguf_base: str, name_map: gguf.TensorNameMap, source_names: list[str],
                 suffix: str = ".weight") -> str:
    """The checkpoint name most likely meant for a GGUF tensor, for error messages."""
    candidates = [key for key, (_, name) in name_map.mapping.items() if name == gguf_base and key != gguf_base]
    prefixes = {n.split(".", 1)[0] for n in source_names}
    for key in candidates:
        if key.split(".", 1)[0] in prefixes:
            return key + suffix
    return (candidates[0] + suffix) if candidates else gguf_base


# ---------------------------------------------------------------- writing

_PHI3_NAME_TOKENS = frozenset({"</s>", "<unk>", "<s>", "<|endoftext|>"})


def _model_name(name: str, vocab: Vocabulary, warnings: list[str]) -> str | None:
    """general.name, unless llama.cpp would crash on it: a name containing "phi3"/"phi-3" makes it
    look up Phi-3's special tokens by text, and a vocabulary without them fails to load."""
    lowered = name.lower()
    if ("phi3" in lowered or "phi-3" in lowered) and not _PHI3_NAME_TOKENS <= set(vocab.tokens):
        warnings.append(f"general.name {name!r} left out: llama.cpp expects Phi-3's tokens "
                        "</s> <unk> <s> <|endoftext|> in a model of that name")
        return None
    return name


def _output_path(src: Path, out: Path, outtype: str) -> Path:
    if out.is_dir():
        return out / f"{src.resolve().name}-{outtype}.gguf"
    return out


def _write_gguf(path: Path, arch: Architecture, config: ModelConfig, plan: list[PlannedTensor], metadata: Metadata,
                vocab: Vocabulary, name: str | None, outtype: str, progress: Progress | None, total: int) -> None:
    writer = gguf.GGUFWriter(path, arch.name)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        if name:
            writer.add_name(name)
        for key, value, value_type in metadata:
            writer.add_key_value(key, value, value_type)
        writer.add_file_type(OUTTYPES[outtype][0])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab.write(writer)
        for p in plan:
            if p.qtype in (Q.F32, Q.F16):
                dtype = np.float32 if p.qtype == Q.F32 else np.float16
                writer.add_tensor_info(p.name, p.shape, np.dtype(dtype), p.nbytes, raw_dtype=p.qtype)
            else:
                byte_shape = gguf.quant_shape_to_byte_shape(p.shape, p.qtype)
                writer.add_tensor_info(p.name, byte_shape, np.dtype(np.uint8), p.nbytes, raw_dtype=p.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        done = 0
        if progress is not None:
            progress(0, total)
        for p in plan:
            writer.write_tensor_data(p.build(config))
            done += p.nbytes
            if progress is not None:
                progress(done, total)
        writer.flush()
    finally:
        writer.close()

"""Quantize exported ONNX graphs with onnxruntime: int8 dynamic and int4 weight-only (MatMulNBits).

    quantize_folder(Path("work/fp32"), Path("work/int8"), "int8")
    quantize_folder(Path("work/fp32"), Path("work/int4"), "int4", Int4Options(block_size=32))

int8 is `quantize_dynamic` with signed int8 weights quantized **per output channel**: measured on
all-MiniLM-L6-v2 here (100 sentences, mean-pooled embeddings vs PyTorch), onnxruntime's default
per-tensor scheme reaches cosine mean 0.964 / min 0.934, per-channel 0.993 / 0.988 at the same
speed (1.6x fp32 on AVX-512 VNNI) and size (22 MiB vs 88); unsigned weights (QUInt8) are as
accurate but no faster than fp32 here. Activations are quantized at run time (dynamic), so no
calibration data is needed.

A token table that is also the output projection (tied embeddings, e.g. Whisper's decoder) stays
fp32: onnxruntime quantizes the lookup's table with one scale for all of it and would compute the
logits in fp32 from that coarse copy, dequantized again at every decoding step. Earlier
measurements (Whisper base, the 32 espeak-ng sentences of `convert.onnx.speech`, 321 words, with
the temperature fallback, whose unseeded sampling moved results by a few words): table kept fp32
19.3%, left tied ~19%, untied with a per-channel int8 projection 19.6% (CTranslate2 int8 18.7%).

Convolutions stay fp32 (only MatMul and Gather are quantized): onnxruntime's ConvInteger is slower
than its fp32 Conv, and Whisper's two encoder convolutions, which read the log-mel features, lose
the most words for their few weights. Measured 2026-12-03 on 2 AVX-512 VNNI cores, all greedy
(no fallback, so the WERs repeat exactly), the 32 sentences in one run (`bench_onnx.py
--int8-variants`, table there): CTranslate2 int8 18.7% (60 errors), ONNX fp32 17.4% (56, RTF
0.178, encoder 297 ms); this scheme 17.4% (56, RTF 0.127, encoder 188 ms); with ConvInteger (the
previous scheme) 19.0% (61, 0.135, 224 ms); MatMul only (the decoder's position table fp32 too)
16.8% (54); per-tensor weights 20.9% (67); int8 encoder with fp32 decoders 16.2% (52) but RTF 0.138
and 410 MiB; fp32 encoder with int8 decoders 17.8% (57), RTF 0.162. With 7-bit weights
(`reduce_range`, what a CPU without VNNI gets; the integer products are exact on both, so up to
float rounding elsewhere this CPU computes what an AVX2 one does): this scheme 15.9% (51), with
ConvInteger 18.4% (59), MatMul only 15.6% (50). A couple of words separate MatMul-only from this
scheme, within what the set can tell apart; keeping Gather quantized leaves MiniLM's scheme (its
45 MB word table int8) unchanged.

int4 is `MatMulNBitsQuantizer`: only MatMul weights (the bulk of a transformer) become 4-bit
blocks with one scale (and zero point unless symmetric) per `block_size` values; embeddings and
everything else stay fp32. `accuracy_level` picks the precision the kernel computes in (4 = int8
activations, fastest on VNNI CPUs; 0 = fp32).

Files that are not graphs (config, tokenizer) are copied, so the output folder is a complete model.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from edge_ai.errors import EdgeAIError
from edge_ai.hardware import cpu_flags

PRECISIONS = ("fp32", "int8", "int4")


@dataclass(frozen=True)
class Int8Options:
    """What `quantize_dynamic` turns to int8; the defaults are the scheme the docstring justifies."""

    per_channel: bool = True  # one weight scale per output channel (False: one per tensor)
    reduce_range: bool | None = None  # 7-bit weights; None: only on CPUs without VNNI (`needs_reduced_range`)
    # op types to quantize; () = all onnxruntime can (adds Conv, Attention, LSTM, ...). Conv stays fp32:
    # ConvInteger is slower than fp32 Conv here and Whisper's convs on the log-mel are sensitive (docstring)
    op_types: tuple[str, ...] = ("MatMul", "Gather")
    keep_fp32: tuple[str, ...] = ()  # nodes whose name contains one of these stay fp32 (e.g. "/conv1/")
    graphs: tuple[str, ...] = ()  # graph file stems to quantize ("encoder_model"); () = all; the rest stay fp32

    def resolved(self) -> Int8Options:
        """These options with reduce_range decided for this CPU."""
        return self if self.reduce_range is not None else replace(self, reduce_range=needs_reduced_range())

    def describe(self) -> str:
        """The scheme in one line, for the report (what a reader needs to reproduce or compare it)."""
        reduce_range = self.resolved().reduce_range
        parts = [f"dynamic int8 of {', '.join(self.op_types) or 'every op onnxruntime can'}",
                 "per-channel" if self.per_channel else "per-tensor",
                 "7-bit weights (reduce_range)" if reduce_range else "8-bit weights",
                 "tied token tables fp32"]
        if self.keep_fp32:
            parts.append(f"fp32 nodes matching {', '.join(self.keep_fp32)}")
        if self.graphs:
            parts.append(f"only {', '.join(self.graphs)}")
        return "; ".join(parts)

    def excluded(self, graph: Path) -> list[str]:
        """Names of the nodes of `graph` left fp32: a tied token table's lookup and the `keep_fp32` matches."""
        import onnx

        names = [n.name for n in onnx.load(str(graph), load_external_data=False).graph.node]
        kept = [name for name in names if any(part in name for part in self.keep_fp32)]
        return sorted(set(tied_embedding_lookups(graph)) | set(kept))


@dataclass(frozen=True)
class Int4Options:
    block_size: int = 32  # values per scale; 32 keeps small models' accuracy, 128 is smaller and faster
    accuracy_level: int = 4  # 0 fp32 compute, 1 fp32, 2 fp16, 3 bf16, 4 int8 (MatMulNBits' meaning)
    symmetric: bool = True  # no zero points: smaller, and what onnxruntime-genai's builder uses

    def check(self) -> None:
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise EdgeAIError(f"--block-size {self.block_size} is not a power of two >= 16; use 32, 64 or 128")
        if self.accuracy_level not in range(5):
            raise EdgeAIError(f"--accuracy-level {self.accuracy_level} is not 0-4 (4 = int8 compute, 0 = fp32)")

    def describe(self) -> str:
        """The scheme in one line, for the report."""
        return (f"int4 MatMulNBits, blocks of {self.block_size}, {'symmetric' if self.symmetric else 'zero points'}, "
                f"accuracy level {self.accuracy_level}")


def quantize_folder(src: Path, dest: Path, precision: str, int4: Int4Options = Int4Options(),
                    int8: Int8Options = Int8Options()) -> list[Path]:
    """Write `src`'s model with every .onnx graph quantized to `precision` into `dest` (created); with
    `int8.graphs`, the other graphs are copied as they are."""
    if precision not in ("int8", "int4"):
        raise ValueError(f"cannot quantize to {precision}")
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.suffix != ".onnx" and not item.name.endswith(".onnx_data") and item.is_file():
            shutil.copy2(item, dest / item.name)
    outputs = []
    for graph in sorted(src.glob("*.onnx")):
        target = dest / graph.name
        if precision == "int8" and int8.graphs and graph.stem not in int8.graphs:
            shutil.copy2(graph, target)
        elif precision == "int8":
            _int8(graph, target, int8)
        else:
            _int4(graph, target, int4)
        outputs.append(target)
    return outputs


def _has_external_data(graph: Path) -> bool:
    return any(graph.parent.glob(f"{graph.name}_data")) or any(graph.parent.glob(f"{graph.stem}.onnx_data"))


def tied_embedding_lookups(graph: Path) -> list[str]:
    """Gather nodes that read a token table the graph also uses as a matrix (tied input and output
    embeddings, e.g. Whisper's decoder: the logits are hidden states times the transposed table)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    gathers = {n.input[0]: n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in initializers}
    return [name for table, name in gathers.items()
            if any(n.op_type != "Gather" and table in n.input for n in model.graph.node)]


def needs_reduced_range(flags: set[str] | None = None) -> bool:
    """7-bit weights on CPUs without VNNI: onnxruntime's u8 x s8 kernels there use VPMADDUBSW, whose 16-bit
    sums saturate on full-range int8 weights (its docs say so). Measured on an AVX2-only CPU, Whisper base
    int8 with full-range weights: WER 24.0% against CTranslate2 int8's 21.2%, and beam and greedy decoding
    disagreeing on clear speech."""
    flags = cpu_flags() if flags is None else flags
    return not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def _int8(graph: Path, target: Path, options: Int8Options) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs "consider pre-processing" (shape inference) on the root logger each call
    try:
        reduce_range = options.resolved().reduce_range
        quantize_dynamic(graph, target, per_channel=options.per_channel, weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(options.op_types) or None, nodes_to_exclude=options.excluded(graph),
                         reduce_range=reduce_range, use_external_data_format=_has_external_data(graph))
    finally:
        root.setLevel(level)


def _int4(graph: Path, target: Path, options: Int4Options) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(graph))
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=options.block_size,
                                     is_symmetric=options.symmetric, accuracy_level=options.accuracy_level)
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=_has_external_data(graph))

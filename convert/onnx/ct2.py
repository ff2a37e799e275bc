"""Import a CTranslate2 Whisper model (faster-whisper's format) as a transformers Whisper checkpoint.

    report = import_ct2(Path("whisper-base-ct2"), Path("whisper-base-hf"))

The offline Whisper base ships only as CTranslate2 files (model.bin, config.json, tokenizer.json);
exporting it to ONNX goes through transformers, so its weights are read back and renamed.

model.bin (binary version 6, written by `ctranslate2.specs.ModelSpec._serialize`): uint32 version,
string spec name, uint32 revision, uint32 variable count, then per variable: string name, uint8
rank, uint32 dims, uint8 dtype id (float32, int8, int16, int32, float16, bfloat16), uint32 byte
count, raw bytes; then uint32 alias count and (alias, target) string pairs. Strings are a uint16
length (with the NUL) + UTF-8 + NUL. Little-endian throughout.

CTranslate2 fuses projections: encoder and decoder self-attention `linear_0` is q|k|v stacked
(k's bias is stored as zeros: Whisper's k_proj has none), cross-attention `linear_0` is q and
`linear_1` is k|v; `ffn/layer_norm` is the pre-FFN norm. Everything else maps one to one.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from convert.onnx.convert import make_workdir, move_into_place
from edge_ai.errors import EdgeAIError

_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # None: bfloat16, converted by hand
SUPPORTED_VERSIONS = range(5, 7)


@dataclass(frozen=True)
class Ct2ImportReport:
    source: str
    output: str
    spec: str
    parameters: int
    layers: tuple[int, int]  # encoder, decoder
    seconds: float


def read_model_bin(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables by name, aliases resolved) from a CTranslate2 model.bin."""
    try:
        with path.open("rb") as f:
            return _read(f, path)
    except FileNotFoundError:
        raise EdgeAIError(f"{path.parent} has no model.bin; pass a CTranslate2 model folder (faster-whisper's "
                          "format: model.bin, config.json, tokenizer.json)") from None
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise EdgeAIError(f"{path} is truncated or not a CTranslate2 model ({exc}); copy it again") from None


def _read(f: BinaryIO, path: Path) -> tuple[str, dict[str, np.ndarray]]:
    def unpack(fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = f.read(size)
        if len(data) != size:
            raise ValueError("unexpected end of file")
        return struct.unpack("<" + fmt, data)[0]

    def string() -> str:
        return f.read(unpack("H"))[:-1].decode("utf-8")

    version = unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise EdgeAIError(f"{path} is CTranslate2 binary version {version}; this importer reads versions "
                          f"{SUPPORTED_VERSIONS.start}-{SUPPORTED_VERSIONS.stop - 1} (CTranslate2 3.x-4.x)")
    spec = string()
    unpack("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("I")):
        name = string()
        shape = [unpack("I") for _ in range(unpack("B"))]
        dtype_id = unpack("B")
        raw = f.read(unpack("I"))
        if dtype_id >= len(_DTYPES):
            raise ValueError(f"unknown dtype id {dtype_id} for {name}")
        dtype = _DTYPES[dtype_id]
        if dtype is None:  # bfloat16: the high half of a float32
            array = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=dtype)
        if array.size != int(np.prod(shape)):
            raise ValueError(f"{name} has {array.size} values for shape {shape}")
        variables[name] = array.reshape(shape)
    for _ in range(unpack("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec, variables


def _count(variables: dict[str, np.ndarray], side: str) -> int:
    """Number of layers of the encoder or decoder (`encoder/layer_5/...`; `layer_norm` is not one)."""
    return len({m.group(1) for name in variables if (m := re.match(rf"{side}/layer_(\d+)/", name))})


def _scalar(variables: dict[str, np.ndarray], name: str) -> int:
    return int(variables[name].reshape(-1)[0])


def whisper_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers `WhisperForConditionalGeneration` tensors (float32) from CTranslate2's variables."""
    v = {name: a.astype(np.float32) for name, a in variables.items() if a.dtype.kind == "f"}
    out: dict[str, np.ndarray] = {}

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        out[f"{hf}.weight"] = v[f"{ct2}/weight"]
        if bias:
            out[f"{hf}.bias"] = v[f"{ct2}/bias"]

    def norm(hf: str, ct2: str) -> None:
        out[f"{hf}.weight"], out[f"{hf}.bias"] = v[f"{ct2}/gamma"], v[f"{ct2}/beta"]

    def split(hf: str, projections: tuple[str, ...], ct2: str) -> None:
        weights = np.split(v[f"{ct2}/weight"], len(projections))
        biases = np.split(v[f"{ct2}/bias"], len(projections))
        for name, weight, bias in zip(projections, weights, biases):
            out[f"{hf}.{name}.weight"] = weight
            if name != "k_proj":  # Whisper's key projections have no bias (CTranslate2 stores zeros)
                out[f"{hf}.{name}.bias"] = bias

    for side in ("encoder", "decoder"):
        hf_side = f"model.{side}"
        out[f"{hf_side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        norm(f"{hf_side}.layer_norm", f"{side}/layer_norm")
        for i in range(_count(variables, side)):
            hf, ct2 = f"{hf_side}.layers.{i}", f"{side}/layer_{i}"
            split(f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), f"{ct2}/self_attention/linear_0")
            linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
            if side == "decoder":
                linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
                split(f"{hf}.encoder_attn", ("k_proj", "v_proj"), f"{ct2}/attention/linear_1")
                linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    out["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    out["proj_out.weight"] = v["decoder/projection/weight"]
    return out


def _whisper_config(variables: dict[str, np.ndarray], tokens: dict[str, int], ct2_config: dict[str, Any]) -> Any:
    from transformers import WhisperConfig

    vocab, d_model = variables["decoder/embeddings/weight"].shape
    eot = tokens["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=int(vocab), d_model=int(d_model), num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]),
        encoder_layers=_count(variables, "encoder"), decoder_layers=_count(variables, "decoder"),
        encoder_attention_heads=_scalar(variables, "encoder/num_heads"),
        decoder_attention_heads=_scalar(variables, "decoder/num_heads"),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        decoder_start_token_id=tokens["<|startoftranscript|>"], architectures=["WhisperForConditionalGeneration"],
        tie_word_embeddings=True)


def generation_config(config: Any, tokens: dict[str, int], ct2_config: dict[str, Any]) -> Any:
    """What transformers' `generate` needs for Whisper: task/language ids, timestamps, suppression."""
    from transformers import GenerationConfig

    languages = {token: tokens[token] for token in sorted(tokens, key=tokens.get)
                 if tokens[token] in set(ct2_config.get("lang_ids", []))}
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, max_length=config.max_target_positions,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, config.eos_token_id])),
        lang_to_id=languages, task_to_id={"transcribe": tokens["<|transcribe|>"],
                                          "translate": tokens["<|translate|>"]},
        no_timestamps_token_id=tokens["<|notimestamps|>"], is_multilingual=len(languages) > 1,
        alignment_heads=ct2_config.get("alignment_heads"), forced_decoder_ids=None)


def special_tokens(tokenizer_file: Path) -> dict[str, int]:
    data = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    tokens = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    missing = [t for t in ("<|endoftext|>", "<|startoftranscript|>", "<|transcribe|>", "<|translate|>",
                           "<|notimestamps|>") if t not in tokens]
    if missing:
        raise EdgeAIError(f"{tokenizer_file} lacks Whisper's special tokens {missing}; it is not a Whisper tokenizer")
    return tokens


def import_ct2(src: Path, out_dir: Path, *, force: bool = False) -> Ct2ImportReport:
    """Write a transformers Whisper checkpoint (safetensors, configs, tokenizer, feature extractor)."""
    start = time.perf_counter()
    src, out_dir = src.expanduser(), out_dir.expanduser()
    if not src.is_dir():
        raise EdgeAIError(f"{src} is not a folder; pass a CTranslate2 Whisper folder (model.bin, tokenizer.json)")
    if out_dir.exists() and not force:
        raise EdgeAIError(f"{out_dir} already exists; choose another folder or pass --force to replace it")
    spec, variables = read_model_bin(src / "model.bin")
    if spec != "WhisperSpec":
        raise EdgeAIError(f"{src / 'model.bin'} holds a CTranslate2 {spec}; only Whisper models can be imported")
    if any(name.endswith("weight_scale") for name in variables):
        raise EdgeAIError(f"{src / 'model.bin'} is quantized (int8 weights with scales); import a float16 or float32 "
                          "CTranslate2 model (ct2-transformers-converter --quantization float16)")
    if not (src / "tokenizer.json").is_file():
        raise EdgeAIError(f"{src} has no tokenizer.json; copy it from the model's release next to model.bin")
    tokens = special_tokens(src / "tokenizer.json")
    import torch  # after the checks: a wrong path is refused without waiting seconds for torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    ct2_config = json.loads((src / "config.json").read_text(encoding="utf-8")) if (src / "config.json").is_file() else {}
    config = _whisper_config(variables, tokens, ct2_config)
    model = WhisperForConditionalGeneration(config)
    state = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in whisper_state_dict(variables).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if m != "proj_out.weight"]  # tied to the token embedding
    if missing or unexpected:
        raise EdgeAIError(f"{src / 'model.bin'} does not map onto Whisper: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    model.generation_config = generation_config(config, tokens, ct2_config)
    work = make_workdir(out_dir)
    try:
        model.save_pretrained(work / "model")
        WhisperTokenizerFast(tokenizer_file=str(src / "tokenizer.json")).save_pretrained(work / "model")
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(work / "model")
        move_into_place(work / "model", out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Ct2ImportReport(str(src), str(out_dir), spec, sum(p.numel() for p in model.parameters()),
                           (config.encoder_layers, config.decoder_layers), time.perf_counter() - start)

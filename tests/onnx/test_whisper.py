"""Whisper without torch: numpy log-mel features, the CTranslate2 import checked against
faster-whisper, ONNX export + int8, and the onnxruntime transcriber (greedy, timestamps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from run_cli import edge_ai
from whisper_models import assemble_ct2_whisper, build_tiny_whisper

from convert.onnx.speech import WER_SENTENCES, speak, word_errors
from edge_ai.errors import EdgeAIError
from runtime.audio.mel import N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram, mel_filters, pad_or_trim


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speak(WER_SENTENCES[0])


def test_log_mel_matches_openai_whisper_and_transformers(speech: np.ndarray) -> None:
    """Against openai-whisper's own `log_mel_spectrogram` (torch.stft, the mel filters shipped in its
    package) and transformers' numpy `WhisperFeatureExtractor`, for 80 and 128 (large-v3) mel bands."""
    import torch
    import whisper.audio
    from transformers import WhisperFeatureExtractor

    audio = pad_or_trim(speech)
    for n_mels in (80, 128):
        openai_filters = whisper.audio.mel_filters("cpu", n_mels).numpy()
        np.testing.assert_allclose(mel_filters(n_mels), openai_filters, atol=1e-6)
        got = log_mel_spectrogram(audio, n_mels)
        assert got.shape == (n_mels, 3000) and got.dtype == np.float32
        openai = whisper.audio.log_mel_spectrogram(torch.from_numpy(audio), n_mels).numpy()
        transformers = WhisperFeatureExtractor(feature_size=n_mels)(speech, sampling_rate=16000,
                                                                    return_tensors="np").input_features[0]
        assert np.abs(got - openai).max() < 1e-3, n_mels  # torch.stft computes in float32
        assert np.abs(got - transformers).max() < 1e-4, n_mels
    silence = log_mel_spectrogram(np.zeros(N_SAMPLES, dtype=np.float32))  # log10 clamped, no -inf
    np.testing.assert_allclose(silence, whisper.audio.log_mel_spectrogram(torch.zeros(N_SAMPLES)).numpy(), atol=1e-6)
    assert len(speech) < N_SAMPLES and pad_or_trim(np.ones(N_SAMPLES + 5)).shape == (N_SAMPLES,)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


@pytest.mark.slow
def test_tiny_whisper_export_int8_and_decode(tiny_whisper: Path, tmp_path: Path, speech: np.ndarray) -> None:
    from convert.onnx import convert_onnx
    from runtime.audio.onnx_whisper import DecodeOptions, OnnxWhisper

    report = convert_onnx(tiny_whisper, tmp_path / "onnx", quantize="int8")
    assert report.task == "automatic-speech-recognition" and report.kept == "int8"
    fp32, int8 = report.variants
    assert fp32.parity["top1"] == 1.0 and fp32.parity["kld_mean"] < 1e-5
    assert fp32.parity["wer"] == fp32.parity["wer_pytorch"]  # the same words as PyTorch (random ones)
    assert set(fp32.files) == {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"}
    assert int8.size < fp32.size / 2

    stt = OnnxWhisper(tmp_path / "onnx")
    result = stt.transcribe(speech, DecodeOptions(max_tokens=24))
    begin = stt.vocab.timestamp_begin
    assert result.tokens and result.tokens[0] >= begin  # the timestamp rules: a timestamp first...
    assert result.tokens[0] - begin <= 50  # ...within max_initial_timestamp (1 s)
    stamps = [t for t in result.tokens if t >= begin]
    assert stamps == sorted(stamps)  # never going back
    for segment in result.segments:
        assert 0.0 <= segment.start <= segment.end <= len(speech) / SAMPLE_RATE + 1e-6
    assert stt.detect_language(stt.encode(speech))[0] in stt.vocab.languages
    plain = stt.transcribe(speech, DecodeOptions(timestamps=False, max_tokens=8))
    assert all(t < begin for t in plain.tokens) and len(plain.tokens) <= 8


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(CTranslate2 folder, transformers checkpoint imported from it by `edge-ai convert import-ct2`)."""
    root = tmp_path_factory.mktemp("ct2")
    ct2 = assemble_ct2_whisper(root / "ct2")
    result = edge_ai("convert", "import-ct2", str(ct2), str(root / "hf"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layers"] == [6, 6]
    return ct2, root / "hf"


@pytest.mark.slow
def test_ct2_import_matches_faster_whisper(imported: tuple[Path, Path]) -> None:
    """Same features into both models: the encoder outputs agree and greedy decoding picks the same tokens."""
    import ctranslate2
    import torch
    from faster_whisper import WhisperModel
    from transformers import WhisperForConditionalGeneration

    ct2, hf = imported
    model = WhisperForConditionalGeneration.from_pretrained(hf).eval()
    generation = model.generation_config
    prompt = [generation.decoder_start_token_id, generation.lang_to_id["<|en|>"], generation.task_to_id["transcribe"],
              generation.no_timestamps_token_id]
    reference = WhisperModel(str(ct2), device="cpu", compute_type="float32", cpu_threads=2).model
    for text in WER_SENTENCES[:3]:
        features = log_mel_spectrogram(pad_or_trim(speak(text)))[None]
        with torch.no_grad():
            encoded = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
            ids = model.generate(torch.from_numpy(features), language="en", task="transcribe", num_beams=1)[0].tolist()
        view = ctranslate2.StorageView.from_array(features)
        ct2_encoded = np.array(reference.encode(view, to_cpu=True))
        # CT2 keeps the shipped float16 weights (computing in float32); the import widens them exactly
        assert np.abs(encoded - ct2_encoded).max() < 1e-2 * np.abs(ct2_encoded).max()
        ct2_ids = reference.generate(view, [prompt], beam_size=1, suppress_blank=True)[0].sequences_ids[0]
        assert [t for t in ids if t not in prompt and t != model.config.eos_token_id] == ct2_ids, text


@pytest.mark.slow
def test_real_whisper_onnx_int8_transcribes_like_fp32(imported: tuple[Path, Path], tmp_path: Path) -> None:
    """Whisper base exported and int8-quantized: fp32 ONNX transcribes exactly like PyTorch, int8 within
    one point of WER of it; timestamps and segments on real speech; faster-whisper's WER printed beside."""
    from faster_whisper import WhisperModel

    from convert.onnx import convert_onnx
    from runtime.audio.onnx_whisper import OnnxWhisper

    ct2, hf = imported
    report = convert_onnx(hf, tmp_path / "base-int8", quantize="int8")
    fp32, int8 = report.variants
    assert fp32.parity["wer"] == fp32.parity["wer_pytorch"] and fp32.parity["top1"] == 1.0
    assert int8.problem is None or "slower" in int8.problem, int8.problem  # within the WER budget
    stt = OnnxWhisper(tmp_path / "base-int8")
    reference = WhisperModel(str(ct2), device="cpu", compute_type="int8", cpu_threads=2)
    onnx_errors = ct2_errors = words = 0
    for text in WER_SENTENCES[3:]:  # the probe spoke the first three
        samples = speak(text)
        result = stt.transcribe(samples)
        assert result.segments and result.segments[0].start < 1.0
        assert result.segments[-1].end <= len(samples) / SAMPLE_RATE + 0.5
        errors, n = word_errors(text, result.text)
        onnx_errors, words = onnx_errors + errors, words + n
        ct2_errors += word_errors(text, "".join(s.text for s in reference.transcribe(samples, language="en",
                                                                                       beam_size=1)[0]))[0]
    print(f"WER on {len(WER_SENTENCES) - 3} espeak sentences: ONNX int8 {onnx_errors / words:.3f}, faster-whisper "
          f"int8 {ct2_errors / words:.3f}; int8 vs fp32 on the probe: {int8.parity} / {fp32.parity}")
    assert onnx_errors / words <= 0.15  # clear speech: a broken decoder or quantization scores far worse


def test_bad_whisper_inputs_are_clear_errors(tmp_path: Path) -> None:
    from convert.onnx.ct2 import read_model_bin
    from runtime.audio.onnx_whisper import OnnxWhisper

    truncated = tmp_path / "ct2" / "model.bin"
    truncated.parent.mkdir()
    truncated.write_bytes((6).to_bytes(4, "little") + b"\x0c\x00WhisperSp")
    with pytest.raises(EdgeAIError, match=r"model\.bin is truncated or not a CTranslate2 model"):
        read_model_bin(truncated)
    result = edge_ai("convert", "import-ct2", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert result.returncode != 0 and "is not a folder" in result.stderr.strip().splitlines()[-1]
    with pytest.raises(EdgeAIError, match="has no tokenizer.json"):
        OnnxWhisper(tmp_path / "ct2")


def test_the_speech_runtime_imports_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, runtime.audio.onnx_whisper, runtime.audio.mel; "
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum', "
            "'convert'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""

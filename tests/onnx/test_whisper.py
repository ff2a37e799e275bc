"""Whisper without torch: numpy log-mel features, the CTranslate2 import checked against
faster-whisper, ONNX export + int8, and the onnxruntime transcriber (greedy, timestamps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from run_cli import edge_ai
from whisper_models import assemble_ct2_whisper, build_tiny_whisper

from convert.onnx.speech import WER_SENTENCES, compare_transcribers, speak, wer_set, word_errors
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
    import onnx

    from convert.onnx import convert_onnx
    from runtime.audio.onnx_whisper import DecodeOptions, OnnxWhisper

    report = convert_onnx(tiny_whisper, tmp_path / "onnx", quantize="int8")
    assert report.task == "automatic-speech-recognition" and report.kept == "int8"
    fp32, int8 = report.variants
    assert fp32.parity["top1"] == 1.0 and fp32.parity["kld_mean"] < 1e-5
    assert fp32.parity["wer"] == fp32.parity["wer_pytorch"]  # the same words as PyTorch (random ones)
    assert set(fp32.files) == {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"}
    # int8 weights, except the decoders' token table, tied to the output projection, and the encoder's
    # convolutions, which stay fp32 (the tiny model's convs and position table outweigh its 2 layers: 0.78)
    assert int8.files["encoder_model.onnx"] < fp32.files["encoder_model.onnx"] * 0.85
    encoder_ops = {n.op_type for n in onnx.load(str(tmp_path / "onnx" / "encoder_model.onnx")).graph.node}
    assert {"MatMulInteger", "Conv"} <= encoder_ops and "ConvInteger" not in encoder_ops
    assert int8.files["decoder_model.onnx"] < fp32.files["decoder_model.onnx"]

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


@pytest.fixture(scope="module")
def whisper_onnx(imported: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The imported Whisper base exported by `convert_onnx` (fp32, checked against PyTorch) and its int8
    quantization by the same function `--quantize int8` uses."""
    from convert.onnx import convert_onnx
    from convert.onnx.quantize import quantize_folder

    root = tmp_path_factory.mktemp("whisper-onnx")
    report = convert_onnx(imported[1], root / "fp32", quantize="none")
    (fp32,) = report.variants
    assert fp32.parity["wer"] == fp32.parity["wer_pytorch"] and fp32.parity["top1"] == 1.0  # PyTorch's words
    quantize_folder(root / "fp32", root / "int8", "int8")
    return {"fp32": root / "fp32", "int8": root / "int8"}


@pytest.fixture(scope="module")
def fixed_set() -> list[tuple[str, np.ndarray]]:
    return [(text, speak(text, voice)) for text, voice in wer_set()]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # ~2 min on an idle 2-core machine; 3 transcribers x 32 sentences when it is busy
def test_whisper_wer_and_speed_on_the_fixed_set(imported: tuple[Path, Path], whisper_onnx: dict[str, Path],
                                                fixed_set: list[tuple[str, np.ndarray]]) -> None:
    """The issue's target on 32 sentences in 4 espeak-ng voices: ONNX int8 WER within one point of
    faster-whisper (CTranslate2 int8) and int8 faster than ONNX fp32.

    All three decode greedily with no temperature fallback: faster-whisper's fallback samples with an
    unseeded generator, which moved its WER by two words between runs, more than the margin measured.
    """
    from faster_whisper import WhisperModel

    from runtime.audio.onnx_whisper import DecodeOptions, OnnxWhisper

    ct2 = WhisperModel(str(imported[0]), device="cpu", compute_type="int8", cpu_threads=2)
    systems = {"ct2_int8": lambda samples: "".join(s.text for s in ct2.transcribe(
        samples, language="en", beam_size=1, temperature=0.0)[0])}
    greedy = DecodeOptions(temperatures=(0.0,))
    for precision, folder in whisper_onnx.items():
        stt = OnnxWhisper(folder, threads=2)
        systems[f"onnx_{precision}"] = lambda samples, stt=stt: stt.transcribe(samples, greedy).text
    results = compare_transcribers(systems, fixed_set)
    print(json.dumps(results))
    assert results["onnx_fp32"]["wer"] <= 0.25  # robotic voices; a broken decoder scores far worse
    assert results["onnx_int8"]["wer"] <= results["ct2_int8"]["wer"] + 0.01
    assert results["onnx_int8"]["rtf"] < results["onnx_fp32"]["rtf"]

    samples = fixed_set[0][1]  # segments and timestamps on real speech
    result = OnnxWhisper(whisper_onnx["int8"]).transcribe(samples)
    assert result.segments and result.segments[0].start < 1.0
    assert result.segments[-1].end <= len(samples) / SAMPLE_RATE + 0.5


@pytest.mark.slow
def test_beam_search_and_temperature_fallback_on_real_speech(whisper_onnx: dict[str, Path],
                                                             fixed_set: list[tuple[str, np.ndarray]]) -> None:
    from runtime.audio.onnx_whisper import DecodeOptions, OnnxWhisper

    stt = OnnxWhisper(whisper_onnx["int8"])
    for text, samples in (fixed_set[0], fixed_set[1], fixed_set[4]):  # clear speech: beam gets every word
        greedy = stt.transcribe(samples)
        beam = stt.transcribe(samples, DecodeOptions(beam_size=5))
        # greedy int8 may drop a short word where beam search keeps it (seen on an AVX2-only CPU: "with light breeze")
        assert word_errors(text, beam.text)[0] == 0 and word_errors(text, greedy.text)[0] <= 1, (greedy.text, beam.text)
        assert [a.temperature for a in greedy.windows[0].attempts] == [0.0]  # no fallback needed

    # Speech under white noise at -10 dB SNR: the greedy text is improbable, so hotter samples are tried
    # in turn; the first one that passes is kept, or the most probable of all when none does.
    speech = fixed_set[0][1]
    noise = np.random.default_rng(0).standard_normal(len(speech)).astype(np.float32)
    noisy = speech + noise * np.sqrt((speech ** 2).mean() / (noise ** 2).mean() * 10)
    window = stt.transcribe(noisy).windows[0]
    first, *retries = window.attempts
    assert first.temperature == 0.0 and first.avg_logprob < -1.0 and retries
    assert [a.temperature for a in retries] == list(DecodeOptions().temperatures[1:len(window.attempts)])
    passed = [a for a in window.attempts if a.avg_logprob >= -1.0 and a.compression_ratio <= 2.4]
    not_loops = [a for a in window.attempts if a.compression_ratio <= 2.4] or window.attempts
    assert window.kept == (passed[0] if passed else max(not_loops, key=lambda a: a.avg_logprob))
    assert stt.transcribe(noisy).windows[0] == window  # the sampler is seeded: the same audio, the same text
    assert [a.temperature for a in stt.transcribe(noisy, DecodeOptions(temperatures=(0.0,))).windows[0].attempts] == [0.0]

    # Five seconds of noise alone: <|nospeech|> is likely and the text improbable, so the window is silence.
    noise_only = stt.transcribe(noise[:5 * SAMPLE_RATE] * 0.1)
    assert noise_only.windows[0].silent and noise_only.text == "" and not noise_only.segments


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

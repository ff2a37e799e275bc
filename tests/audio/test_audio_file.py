"""Audio files of every common kind read as float32 mono 16 kHz, streamed; bad files give one clear error."""

from __future__ import annotations

import io
import sys
import tracemalloc
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from edge_ai.errors import EdgeAIError, NotFoundError
from runtime.audio.audio_file import SAMPLE_RATE, STDIN, read_audio, read_audio_blocks


def tone(rate: int, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def assert_tone(samples: np.ndarray, seconds: float = 1.0, tolerance: float = 0.01) -> None:
    """`samples` is tone(16000, seconds), away from the edges the resampler's filter touches."""
    expected = tone(SAMPLE_RATE, seconds)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - len(expected)) <= 1
    inner = slice(800, len(expected) - 800)
    assert np.sqrt(np.mean((samples[inner] - expected[inner]) ** 2)) < tolerance


@pytest.mark.parametrize(("rate", "subtype", "fmt", "tolerance"), [
    (16000, "PCM_16", "WAV", 0.001),
    (44100, "PCM_16", "WAV", 0.001),  # another rate
    (8000, "PCM_U8", "WAV", 0.01),  # 8-bit unsigned: quantisation noise at -48 dB
    (22050, "PCM_24", "WAV", 0.001),
    (48000, "PCM_32", "WAV", 0.001),
    (32000, "FLOAT", "WAV", 0.001),
    (96000, "DOUBLE", "WAV", 0.001),
    (44100, "PCM_16", "FLAC", 0.001),
    (48000, "VORBIS", "OGG", 0.05),  # lossy
])
def test_formats_rates_and_widths_read_as_16k_mono(tmp_path: Path, rate: int, subtype: str, fmt: str,
                                                    tolerance: float) -> None:
    path = tmp_path / f"tone.{fmt.lower()}"
    soundfile.write(path, tone(rate), rate, subtype=subtype, format=fmt)
    assert_tone(read_audio(path), tolerance=tolerance)


def test_stereo_is_mixed_down_to_mono(tmp_path: Path) -> None:
    left = tone(44100)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([2 * left, np.zeros_like(left)], axis=1) / 2, 44100, subtype="PCM_16")
    mono = read_audio(path)
    assert_tone(mono * 2, tolerance=0.002)  # (L + R) / 2 with R silent: half the left channel


def test_blocks_stream_and_join_to_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(44100, 3.0), 44100, subtype="FLOAT")
    blocks = list(read_audio_blocks(path, block_seconds=0.25))
    assert len(blocks) >= 10  # a block at a time, not one array
    assert_tone(np.concatenate(blocks), 3.0)  # the resampler's state carries across blocks: no seams


def test_stdin_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, tone(22050), 22050, subtype="PCM_16", format="WAV")
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(buffer.getvalue())))
    assert_tone(read_audio(STDIN))
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"")))
    with pytest.raises(EdgeAIError, match="standard input is empty"):
        read_audio(STDIN)


def test_a_silent_file_is_silence_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(16000 * 2, dtype=np.int16), 16000)
    samples = read_audio(path)
    assert len(samples) == 32000 and not samples.any()


def _wav_header_only(path: Path) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_text("these are words, not sound\n" * 20), "not an audio file"),  # text renamed .wav
    (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200))), "not an audio file"),  # corrupt
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not an audio file"),  # noise bytes
    (_wav_header_only, "no audio samples"),
])
def test_bad_files_say_what_is_wrong(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(EdgeAIError, match=message) as caught:
        read_audio(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(EdgeAIError, match="is a folder"):
        read_audio(tmp_path)


def test_a_long_file_streams_with_bounded_memory(tmp_path: Path) -> None:
    """20 minutes at 22.05 kHz (53 MB on disk, 77 MB as 16 kHz float32 in one array) read block by block:
    traced memory stays at a few blocks."""
    path = tmp_path / "long.wav"
    rate, minutes = 22050, 20
    with soundfile.SoundFile(path, "w", rate, 1, subtype="PCM_16") as out:
        for _ in range(minutes * 6):  # 10 s at a time
            out.write(tone(rate, 10.0))
    tracemalloc.start()
    try:
        total = 0
        for block in read_audio_blocks(path):
            total += len(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert abs(total - minutes * 60 * SAMPLE_RATE) <= 2
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


def _encode(path: Path, container: str, codec: str, samples: np.ndarray, rate: int = 48000) -> None:
    """Stereo `samples` (2 x n) encoded with FFmpeg through PyAV: files libsndfile does not read."""
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        size = stream.codec_context.frame_size or 1024
        to_encoder = av.AudioResampler(format=stream.codec_context.format, layout="stereo", rate=rate)
        for start in range(0, samples.shape[1], size):
            chunk = samples[:, start:start + size]
            chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[1]))).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = rate
            for converted in to_encoder.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize(("suffix", "container", "codec"), [
    ("m4a", "ipod", "aac"),  # a phone's voice memo
    ("webm", "webm", "libopus"),  # a browser's recording
    ("aac", "adts", "aac"),
    ("mkv", "matroska", "aac"),
])
def test_formats_libsndfile_does_not_read_are_decoded_by_ffmpeg(tmp_path: Path, suffix: str, container: str,
                                                                codec: str) -> None:
    path = tmp_path / f"memo.{suffix}"
    left = tone(48000, 3.0)
    _encode(path, container, codec, np.stack([left, np.zeros_like(left)]))
    blocks = list(read_audio_blocks(path, block_seconds=0.5))
    samples = np.concatenate(blocks)
    assert len(blocks) >= 5 and samples.dtype == np.float32
    assert abs(len(samples) / SAMPLE_RATE - 3.0) < 0.1  # (encoders pad a frame or two)
    spectrum = np.abs(np.fft.rfft(samples[8000:40000]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / 32000 - 440) <= 1
    rms = float(np.sqrt(np.mean(samples[8000:40000] ** 2)))
    assert abs(rms - 0.25 / np.sqrt(2)) < 0.02  # the mean of the channels: half the left one


def test_a_file_ffmpeg_opens_but_without_sound_and_a_cut_m4a_say_so(tmp_path: Path) -> None:
    from PIL import Image

    picture = tmp_path / "photo.wav"
    Image.new("RGB", (8, 8)).save(picture, format="PNG")
    with pytest.raises(EdgeAIError, match="no sound track"):
        read_audio(picture)
    memo = tmp_path / "memo.m4a"
    _encode(memo, "ipod", "aac", np.stack([tone(48000)] * 2))
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(memo.read_bytes()[: memo.stat().st_size // 2])  # its index (moov) is at the end
    with pytest.raises(EdgeAIError, match="cut.m4a") as caught:
        read_audio(cut)
    assert "\n" not in str(caught.value)


def test_an_m4a_piped_to_stdin_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memo = tmp_path / "memo.m4a"
    _encode(memo, "ipod", "aac", np.stack([tone(48000, 2.0)] * 2))  # its index (moov) at the end: read after a seek
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(memo.read_bytes())))
    samples = read_audio(STDIN)
    assert abs(len(samples) / SAMPLE_RATE - 2.0) < 0.1 and abs(float(np.abs(samples[8000:24000]).max()) - 0.5) < 0.05

"""Whisper's log-mel spectrogram in numpy (no torch): what the encoder takes as `input_features`.

    features = log_mel_spectrogram(pad_or_trim(samples))    # float32 [80, 3000] for 30 s at 16 kHz

The same computation as openai-whisper's `audio.py` and transformers' `WhisperFeatureExtractor`:
a 25 ms Hann window (periodic) every 10 ms over reflect-padded audio, power spectrum, Slaney-style
mel filters (librosa's default, area-normalised), log10 clamped at 1e-10, then everything more than
8 (i.e. 80 dB) below the loudest value raised to it, and scaled as (x + 4) / 4.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms: 100 frames per second
CHUNK_LENGTH = 30  # seconds of audio per encoder pass
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100


def pad_or_trim(samples: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    """`samples` cut or zero-padded at the end to exactly `length` (30 s: the encoder's fixed input)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.shape[0] >= length:
        return samples[:length]
    return np.pad(samples, (0, length - samples.shape[0]))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_region = hz >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Triangular mel filters [n_mels, n_fft // 2 + 1], as `librosa.filters.mel(sr, n_fft, n_mels)`."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]  # equal area per filter
    return weights.astype(np.float32)


def log_mel_spectrogram(samples: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """float32 [n_mels, len(samples) // HOP_LENGTH] log-mel features of 16 kHz mono `samples`."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    padded = np.pad(samples, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    mel = mel_filters(n_mels).astype(np.float64) @ power[:-1].T  # the last frame is dropped, as in whisper
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)

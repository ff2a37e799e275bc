"""Is this audio the words it should be? Whisper base (faster-whisper, offline) transcribes it back.

    words_heard(samples, rate)           # normalised words of the transcript
    word_recall("hello world", heard)    # fraction of the expected words heard, in order

The Whisper folder is assembled once per session by the ONNX tests' helper (it moves to
runtime/audio/whisper_model.py later).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
import tempfile
from pathlib import Path

import numpy as np

WHISPER_RATE = 16000


@functools.cache
def _whisper():  # -> faster_whisper.WhisperModel
    from faster_whisper import WhisperModel

    spec = importlib.util.spec_from_file_location("whisper_models", Path(__file__).parents[1] / "onnx" / "whisper_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = module.assemble_ct2_whisper(Path(tempfile.mkdtemp(prefix="edge-ai-whisper-")) / "base")
    return WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=2)


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    if rate == WHISPER_RATE:
        return samples.astype(np.float32)
    return soxr.resample(samples.astype(np.float32), rate, WHISPER_RATE).astype(np.float32)


def normalize(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def words_heard(samples: np.ndarray, rate: int) -> list[str]:
    """Whisper base's transcript of the audio, greedy (no sampling fallback: the same every run)."""
    segments, _ = _whisper().transcribe(to_16k(samples, rate), language="en", beam_size=1, temperature=0.0,
                                        vad_filter=False, condition_on_previous_text=False)
    return normalize(" ".join(s.text for s in segments))


def word_recall(expected: str, heard: list[str]) -> float:
    """Fraction of the expected words found, in order, in what was heard."""
    want = normalize(expected)
    matcher = difflib.SequenceMatcher(a=want, b=heard, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(want)

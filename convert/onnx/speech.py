"""Synthetic speech for checking speech models: espeak-ng sentences at 16 kHz, with their text.

    samples = speak("The weather today is sunny.")      # float32 mono 16 kHz

espeak-ng (apt) writes 22.05 kHz WAV; it is read with `wave` (a complete file, so the RIFF sizes
are right, unlike --stdout) and resampled with a polyphase filter. The voice is robotic but every
word is clear, so a good Whisper transcribes it almost perfectly: differences between variants of
one model show up as word errors instead of being lost in the noise of hard audio.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from math import gcd
from pathlib import Path

import numpy as np

from edge_ai.errors import EdgeAIError

SAMPLE_RATE = 16000


def speak(text: str, voice: str = "en-us") -> np.ndarray:
    """float32 16 kHz mono speech of `text` by espeak-ng."""
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        raise EdgeAIError("checking a speech model needs espeak-ng for test speech; install it "
                          "(apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="edge-ai-speech-") as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True,
                       timeout=60)
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    common = gcd(SAMPLE_RATE, rate)
    return resample_poly(samples, SAMPLE_RATE // common, rate // common).astype(np.float32)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word-level edit distance, reference word count) after lower-casing and dropping punctuation."""
    def words(text: str) -> list[str]:
        return "".join(c if c.isalnum() or c.isspace() or c == "'" else " " for c in text.lower()).split()

    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1], len(ref)


# A fixed set for word error rates (tests, benchmarks/bench_onnx.py): everyday requests, numbers
# spelled out (so no digit normalisation is needed), names, a question.
WER_SENTENCES = (
    "The weather today is sunny with a light breeze from the west.",
    "Please remind me to call my sister tomorrow at seven in the evening.",
    "How many kilometers is it from London to Paris by train?",
    "Turn off the lights in the kitchen and lock the front door.",
    "The meeting has been moved to Thursday afternoon because the room was booked.",
    "She bought three apples, two bananas and a loaf of bread at the market.",
    "Can you summarize this document in two short sentences?",
    "Offline assistants keep every conversation on the laptop.",
)

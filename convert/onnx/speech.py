"""Synthetic speech for checking speech models: espeak-ng sentences at 16 kHz, with their text, and
word error rates over a fixed set of them.

    samples = speak("The weather today is sunny.", voice="en-gb")      # float32 mono 16 kHz
    results = compare_transcribers({"mine": transcribe}, [(t, speak(t, v)) for t, v in wer_set()])
    audio, placed = long_recording(32, seed=0)   # the set with pauses and long silences between sentences

espeak-ng (apt) writes 22.05 kHz WAV; it is read with `wave` (a complete file, so the RIFF sizes
are right, unlike --stdout) and resampled with a polyphase filter. The voices are robotic; the
American one is transcribed almost perfectly by Whisper base, the female and Scottish variants
much less so (~17% WER over the set), so quantization damage shows up on the hard voices as well
as a regression on the easy one.

WER is jiwer's word edit distance after `normalize` on both sides: lower case, punctuation
dropped, numbers as words ("7:40" and "seven forty" agree, years read in pairs), a few
contractions expanded, because Whisper writes digits and contractions for spoken words.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
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


# Digits Whisper writes for spoken numbers ("7:40", "12%", "$5", "1,500") are read back as words
# so that "seven forty" and "7:40" count as the same words on both sides.
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus "}
# Whisper writes "I'm" for a spoken "I am" (and back): one spelling for both sides.
_CONTRACTIONS = {"i'm": "i am", "it's": "it is", "that's": "that is", "what's": "what is", "there's": "there is",
                 "let's": "let us", "we're": "we are", "you're": "you are", "they're": "they are",
                 "isn't": "is not", "don't": "do not", "doesn't": "does not", "can't": "cannot",
                 "won't": "will not", "i'll": "i will", "i've": "i have", "we'll": "we will"}


def number_words(n: int) -> str:
    """English words of a non-negative integer: 1993 -> "one thousand nine hundred ninety three"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for scale, name in _SCALES:
        if n >= scale:
            rest = n % scale
            return f"{number_words(n // scale)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def _spell_number(match: re.Match[str]) -> str:
    currency, digits, minutes = match.group(1), match.group(2), match.group(3)
    n = int(digits.replace(",", ""))
    if len(digits) == 4 and (1100 <= n < 2000 or 2010 <= n < 2100):  # a year, said in pairs
        words = f"{number_words(n // 100)} {number_words(n % 100) if n % 100 >= 10 else 'oh ' + _ONES[n % 100]}"
        words = words if n % 100 else f"{number_words(n // 100)} hundred"
    else:
        words = number_words(n)
    if minutes:  # a time: 7:40 -> seven forty, 9:05 -> nine oh five, 6:00 -> six
        m = int(minutes)
        words += "" if m == 0 else f" oh {_ONES[m]}" if m < 10 else f" {number_words(m)}"
    return f" {words} dollars " if currency else f" {words} "


def normalize(text: str) -> str:
    """Lower-case words with numbers spelled out and punctuation dropped, for comparing transcripts."""
    text = text.lower().replace("\u2019", "'")
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = re.sub(r"(\$)?\b(\d{1,3}(?:,\d{3})+|\d+)(?::(\d\d))?\b", _spell_number, text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text.replace("-", " "))
    words = (_CONTRACTIONS.get(word, word).strip("'") for word in text.split())
    return " ".join(word for word in words if word)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word-level edit distance, reference word count) of the normalised texts, by jiwer."""
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        raise ValueError("the reference text has no words")
    measures = jiwer.process_words(ref, hyp)
    return measures.substitutions + measures.deletions + measures.insertions, len(ref.split())


def compare_transcribers(systems: dict[str, Callable[[np.ndarray], str]],
                         speech: list[tuple[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Corpus WER (all word errors over all reference words) and real-time factor of each system
    on `speech` ((text, 16 kHz samples) pairs).

    The systems take turns on each utterance (after one warm-up call each), so a burst of load on
    a shared machine slows them alike and their speeds stay comparable within the run."""
    for transcribe in systems.values():
        transcribe(speech[0][1])
    errors = dict.fromkeys(systems, 0)
    seconds = dict.fromkeys(systems, 0.0)
    words = 0
    for text, samples in speech:
        words += len(normalize(text).split())
        for name, transcribe in systems.items():
            start = time.perf_counter()
            hypothesis = transcribe(samples)
            seconds[name] += time.perf_counter() - start
            errors[name] += word_errors(text, hypothesis)[0]
    audio = sum(len(samples) for _, samples in speech) / SAMPLE_RATE
    return {name: {"wer": errors[name] / words, "rtf": seconds[name] / audio, "errors": errors[name], "words": words}
            for name in systems}


# espeak-ng voices for the fixed set: two accents, a female variant and a Scottish accent, so a
# variant that only copes with one voice shows up (check `espeak-ng --voices=en`).
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland")

# The fixed set for word error rates (tests, probes, benchmarks/bench_onnx.py): everyday requests,
# numbers, names, questions, short and long. Sentence i is spoken by VOICES[i % len(VOICES)].
WER_SENTENCES = (
    "The weather today is sunny with a light breeze from the west.",
    "Please remind me to call my sister tomorrow at seven in the evening.",
    "How many kilometers is it from London to Paris by train?",
    "Turn off the lights in the kitchen and lock the front door.",
    "The meeting has been moved to Thursday afternoon because the room was booked.",
    "She bought three apples, two bananas and a loaf of bread at the market.",
    "Can you summarize this document in two short sentences?",
    "Offline assistants keep every conversation on the laptop.",
    "My flight to Lisbon leaves at seven forty from gate twelve.",
    "Set a timer for fifteen minutes.",
    "What is the capital of Australia?",
    "The library closes at nine on weekdays and at five on Sundays.",
    "Send a message to Anna saying I will be ten minutes late.",
    "Our revenue grew by twelve percent compared with last year.",
    "Add milk, eggs, butter and flour to the shopping list.",
    "The river flooded the valley in nineteen ninety three.",
    "Read me the first chapter of the book again, slowly.",
    "Is it going to rain in Edinburgh this weekend?",
    "The printer on the third floor has run out of paper.",
    "Water the tomatoes in the garden every evening.",
    "Play some quiet music while I am working.",
    "The train was delayed by heavy snow this morning.",
    "Translate good morning into French and Spanish.",
    "How long should I boil an egg for a soft yolk?",
    "The new laptop needs more memory than we expected.",
    "Book a table for two at the Italian restaurant on Friday night.",
    "Open the window, it is getting warm in here.",
    "The football team won the championship after a dramatic final.",
    "Remind me to pay the electricity bill on the first of the month.",
    "My password must have at least twelve characters.",
    "Grandma's soup tastes better with fresh basil and a pinch of salt.",
    "Where did I park the car yesterday?",
)


def wer_set() -> list[tuple[str, str]]:
    """(text, voice) of every sentence of the fixed set."""
    return [(text, VOICES[i % len(VOICES)]) for i, text in enumerate(WER_SENTENCES)]


def long_recording(count: int, seed: int) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """The first `count` sentences of the fixed set in order, each followed by a pause drawn at random from
    `seed`: mostly short (0.3-1.5 s, as between sentences of one speaker), every third a gap of 3-40 s of hiss
    at -60 dBFS (a meeting's silences). Returns the audio and (text, start second) of each sentence."""
    rng = np.random.default_rng(seed)
    parts, placed, at = [], [], 0
    for index, (text, voice) in enumerate(wer_set()[:count]):
        speech = speak(text, voice)
        placed.append((text, at / SAMPLE_RATE))
        pause = rng.uniform(3, 40) if index % 3 == 2 else rng.uniform(0.3, 1.5)
        parts += [speech, rng.normal(0, 10 ** (-60 / 20), round(pause * SAMPLE_RATE)).astype(np.float32)]
        at += len(speech) + len(parts[-1])
    return np.concatenate(parts), placed

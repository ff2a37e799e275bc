"""Speech-to-text behind one small interface, with the backend chosen by `voice.stt_backend`.

    stt = open_stt(cfg)                                    # faster-whisper on the packaged Whisper base
    result = stt.transcribe(samples, word_timestamps=True)  # float32 mono 16 kHz
    result.text, [(w.text, w.start, w.end) for s in result.segments for w in s.words]

| backend        | model (`voice.stt_model`)                        | needs                         |
|----------------|--------------------------------------------------|-------------------------------|
| faster-whisper | a CTranslate2 folder; empty = packaged base      | the voice (+ models) extras   |
| whisper        | an openai-whisper .pt file or an already cached name | the whisper extra (torch)     |
| onnx           | a folder from `edge-ai convert onnx`             | the voice extra (onnxruntime) |

Each backend decodes at temperature 0 with a beam search (`beam_size`: 5 as faster-whisper and
openai-whisper's command line do; voice.stt_beam_size in a conversation). On the bench's 32 espeak
sentences Whisper base makes 46 errors with a beam of 5 against 59 greedy, and its errors move much
less under changes nobody hears (a clip shifted by a sample or at 0.8 of its level: 44-46 against
59-64), so a transcript depends less on how the room passed the sound on; each decode costs ~15% more
(0.30 s against 0.26 s a sentence, 2 AVX2 cores), partial transcripts included. Long recordings
(`edge-ai transcribe`) are decoded greedily by default: there a beam of 5 did worse (bench_transcribe,
two seeds: 16.2 / 22.1% against 13.4 / 12.8%), writing the prompt out again for a window's last
sentences and short phrases into the hiss at a window's end. Each backend then falls back to higher
temperatures the way its library does when the output looks hallucinated (a loop, improbable
tokens); `temperatures=(0.0,)` makes every decode repeatable (never sampled).

Audio that is digitally silent (peak below -60 dBFS) is not decoded at all: Whisper tends to invent a
"Thank you." for it, and silence has no words. For the same reason a segment dated wholly in digital
silence, or after the clip's end, is dropped: at a fallback temperature Whisper writes "I'm sorry." into
every 2 s of a silent stretch before the words. A segment of punctuation alone (". . .", Whisper's
answer to a near-silent window) is dropped too: it has no words, and as the prompt of the next window it
makes Whisper write only dots from then on.

openai-whisper imports torch, which the runtime never imports at start-up: it is imported in its
backend's constructor, only when the user chose it.
"""

from __future__ import annotations

import math
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_ai.errors import EdgeAIError
from edge_ai.hardware import default_threads

SAMPLE_RATE = 16000
SILENCE_PEAK = 10 ** (-60 / 20)  # a clip whose loudest sample is below -60 dBFS has no speech to decode
SEGMENT_SLACK = 0.5  # seconds either side of a segment's times searched for sound: Whisper dates segments roughly
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # openai-whisper's and faster-whisper's fallback schedule
BEAM_SIZE = 5  # hypotheses kept at temperature 0 (voice.stt_beam_size): faster-whisper's and openai-whisper's default
# A decode of a short clip may write MIN_TOKENS + TOKENS_PER_SECOND tokens per second of it (faster-whisper).
# Speech is at most ~12 tokens a second in English and ~20 in scripts of many tokens per character; a loop
# (" It's it's it's ...", "nine, nine, ...") runs on to Whisper's limit, which for a 0.96-s cut-in took ~4 s
# while the turn's final decode waited behind it. A decode whose text reaches half its budget (a timestamp
# token goes with each looped word) less LOOP_SLACK is such a loop: it has no words.
TOKENS_PER_SECOND = 40
MIN_TOKENS = 24
LOOP_SLACK = 2
# budgets from this many tokens on are left to the library: with the longest prompt Whisper keeps (223 tokens)
# and its start tokens they would overfill its 448-token context, which faster-whisper refuses
TOKEN_BUDGET_LIMIT = 220
_WORD_CHARACTER = re.compile(r"\w")  # a letter or digit of any script
# more words than this (+1) in a clip is Whisper copying its prompt or looping, not hearing speech: espeak at
# 1.8x its pace (315 words a minute, beyond a fast talker) is 7.2 words a second as Whisper counts them
MAX_WORDS_PER_SECOND = 8.0


@dataclass(frozen=True)
class Word:
    text: str  # as the model wrote it, with its leading space ("' Hello,'")
    start: float  # seconds from the clip start
    end: float


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the clip start
    end: float
    text: str
    words: tuple[Word, ...]  # empty unless word timestamps were asked for (and the backend has them)


@dataclass(frozen=True)
class Transcription:
    text: str
    segments: tuple[Segment, ...]
    language: str
    duration: float  # seconds of audio
    decode_seconds: float  # wall time spent transcribing it

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(w for s in self.segments for w in s.words)


class SpeechToText(Protocol):
    """A loaded speech model. `transcribe` blocks (run it in a worker thread) and is not thread-safe."""

    name: str

    def transcribe(self, samples: np.ndarray, *, prompt: str = "", word_timestamps: bool = False) -> Transcription:
        """Text of float32 mono 16 kHz `samples`; `prompt` is text said just before (context, spelling)."""
        ...


def said_in_time(segments: Sequence[Segment], seconds: float) -> bool:
    """Whether anyone could say the segments' words in `seconds`. Their words are as many as they have word
    times for or runs of letters and digits in their text, whichever is more: a loop of digits and dots
    ("1.5.2.2.2.2..." in 200 characters, a 1.5-s cut-in in bench_voice) is one word to str.split and to
    faster-whisper's word times."""
    words = max(sum(len(s.words) for s in segments), sum(len(re.findall(r"\w+", s.text)) for s in segments))
    return words <= 1 + MAX_WORDS_PER_SECOND * seconds


def is_silent(samples: np.ndarray) -> bool:
    return len(samples) == 0 or float(np.max(np.abs(samples))) < SILENCE_PEAK


def _over_sound(segment: Segment, clip: np.ndarray) -> bool:
    """Whether any sound lies under `segment`'s times (widened by SEGMENT_SLACK) in `clip`."""
    if segment.start >= len(clip) / SAMPLE_RATE:
        return False
    low = max(int((segment.start - SEGMENT_SLACK) * SAMPLE_RATE), 0)
    high = int((max(segment.start, segment.end) + SEGMENT_SLACK) * SAMPLE_RATE)
    return not is_silent(clip[low:high])


def _as_clip(samples: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))


def _language(language: str) -> str | None:
    """A Whisper language code, or None (detect it) for an empty setting or 'auto'."""
    return None if language in ("", "auto") else language


class _Backend(ABC):
    """What every backend's `transcribe` does around its own decode: timing, and no decode of silence."""

    language: str | None

    def transcribe(self, samples: np.ndarray, *, prompt: str = "", word_timestamps: bool = False) -> Transcription:
        start = time.perf_counter()
        clip = _as_clip(samples)
        duration = len(clip) / SAMPLE_RATE
        if is_silent(clip):
            return Transcription("", (), self.language or "", duration, 0.0)
        segments, language = self._decode(clip, duration, prompt, word_timestamps)
        segments = tuple(s for s in segments if _WORD_CHARACTER.search(s.text) and _over_sound(s, clip))
        return Transcription(_join(segments), segments, language, duration, time.perf_counter() - start)

    @abstractmethod
    def _decode(self, clip: np.ndarray, duration: float, prompt: str,
                word_timestamps: bool) -> tuple[tuple[Segment, ...], str]:
        """The clip's segments (times clipped to `duration`) and its language."""


class FasterWhisperSTT(_Backend):
    """faster-whisper (CTranslate2) on the CPU with int8 weights, the encoder window fitted to the clip
    (`runtime.audio.fitted_whisper`): Whisper base decodes a 3 s question in ~0.4 s on 2 AVX2 cores
    instead of ~1.5 s for a window padded to 30 s."""

    name = "faster-whisper"

    def __init__(self, model: Path, *, language: str = "en", threads: int = 0, beam_size: int = BEAM_SIZE,
                 temperatures: Sequence[float] = TEMPERATURES) -> None:
        try:
            from runtime.audio.fitted_whisper import FittedWhisperModel
        except ImportError:
            raise EdgeAIError("speech-to-text needs faster-whisper: pip install 'edge-ai[voice]'") from None
        if not (model / "model.bin").is_file():
            raise EdgeAIError(f"{model} has no model.bin; give a CTranslate2 Whisper folder as voice.stt_model "
                              "(or leave it empty for the packaged Whisper base)")
        try:
            self._model = FittedWhisperModel(str(model), device="cpu", compute_type="int8",
                                             cpu_threads=threads or default_threads())
        except (RuntimeError, ValueError, OSError) as exc:
            raise EdgeAIError(f"{model} is not a Whisper model faster-whisper can load ({str(exc)[:200]}); "
                              "give a folder written by ct2-transformers-converter") from None
        self.language = _language(language)
        self.beam_size = beam_size
        self.temperatures = tuple(temperatures)

    def _decode(self, clip: np.ndarray, duration: float, prompt: str,
                word_timestamps: bool) -> tuple[tuple[Segment, ...], str]:
        budget = MIN_TOKENS + math.ceil(TOKENS_PER_SECOND * duration)
        limited = budget < TOKEN_BUDGET_LIMIT
        found, info = self._model.transcribe(clip, language=self.language, beam_size=self.beam_size,
                                             temperature=list(self.temperatures), initial_prompt=prompt or None,
                                             word_timestamps=word_timestamps, vad_filter=False,
                                             max_new_tokens=budget if limited else None)
        found = list(found)  # a generator: decoding happens here
        if limited and sum(len(s.tokens) for s in found) >= budget // 2 - LOOP_SLACK:
            return (), info.language  # a loop, not speech
        segments = tuple(Segment(s.start, min(s.end, duration), s.text.strip(),
                                 tuple(Word(w.word, w.start, min(w.end, duration)) for w in (s.words or ())))
                         for s in found)
        return segments, info.language


class OpenAIWhisperSTT(_Backend):
    """openai-whisper (PyTorch) on the CPU in float32, from a checkpoint that is already on disk:
    it never downloads (load_model(name) would)."""

    name = "whisper"

    def __init__(self, model: str, *, language: str = "en", threads: int = 0, beam_size: int = BEAM_SIZE,
                 temperatures: Sequence[float] = TEMPERATURES) -> None:
        try:
            import torch
            import whisper
        except ImportError:
            raise EdgeAIError("the whisper backend needs openai-whisper, which pulls PyTorch: "
                              "pip install 'edge-ai[whisper]', or set voice.stt_backend to faster-whisper") from None
        checkpoint = _openai_checkpoint(model, whisper)
        torch.set_num_threads(threads or default_threads())
        try:
            self._model = whisper.load_model(str(checkpoint), device="cpu")
        except (RuntimeError, KeyError, ValueError, EOFError, OSError) as exc:
            raise EdgeAIError(f"{checkpoint} is not an openai-whisper checkpoint ({str(exc)[:200]})") from None
        self.language = _language(language)
        self.beam_size = beam_size
        self.temperatures = tuple(temperatures)

    def _decode(self, clip: np.ndarray, duration: float, prompt: str,
                word_timestamps: bool) -> tuple[tuple[Segment, ...], str]:
        # beam_size None is openai-whisper's greedy decoder; above temperature 0 it samples either way
        result: dict[str, Any] = self._model.transcribe(
            clip, language=self.language, initial_prompt=prompt or None, word_timestamps=word_timestamps,
            temperature=self.temperatures, beam_size=self.beam_size if self.beam_size > 1 else None,
            fp16=False, verbose=None)
        segments = tuple(Segment(float(s["start"]), min(float(s["end"]), duration), s["text"].strip(),
                                 tuple(Word(w["word"], float(w["start"]), min(float(w["end"]), duration))
                                       for w in s.get("words", ())))
                         for s in result["segments"])
        return segments, result.get("language") or self.language or ""


def _openai_checkpoint(model: str, whisper: Any) -> Path:
    """A .pt file given as a path, or a model name ('base', 'small'...) already in openai-whisper's cache."""
    name = model or "base"
    if Path(name).expanduser().is_file():
        return Path(name).expanduser()
    urls: dict[str, str] = whisper._MODELS  # name -> download URL; the file is cached under its basename
    if name in urls:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper"
        cached = cache / os.path.basename(urls[name])
        if cached.is_file():
            return cached
        raise EdgeAIError(f"openai-whisper's '{name}' checkpoint is not on this machine ({cached}) and edge-ai "
                          "never downloads; set voice.stt_model to a .pt file, or use the faster-whisper backend")
    raise EdgeAIError(f"voice.stt_model '{model}' is neither a .pt file nor an openai-whisper model name "
                      f"({', '.join(urls)})")


class OnnxWhisperSTT(_Backend):
    """An exported Whisper folder on onnxruntime (`runtime.audio.onnx_whisper`). It has segment
    timestamps but no word timestamps and takes no prompt: streaming then re-decodes the whole utterance."""

    name = "onnx"

    def __init__(self, folder: str, *, language: str = "en", threads: int = 0, beam_size: int = BEAM_SIZE,
                 temperatures: Sequence[float] = TEMPERATURES) -> None:
        from runtime.audio.onnx_whisper import DecodeOptions, OnnxWhisper

        if not folder:
            raise EdgeAIError("the onnx speech-to-text backend needs voice.stt_model: a folder written by "
                              "`edge-ai convert onnx --task automatic-speech-recognition`")
        self._model = OnnxWhisper(Path(folder), threads=threads)
        self._options = DecodeOptions(language=_language(language), beam_size=beam_size,
                                      temperatures=tuple(temperatures))
        self.language = self._options.language

    def _decode(self, clip: np.ndarray, duration: float, prompt: str,
                word_timestamps: bool) -> tuple[tuple[Segment, ...], str]:
        result = self._model.transcribe(clip, self._options)  # no prompt, no word timestamps
        return tuple(Segment(s.start, min(s.end, duration), s.text.strip(), ()) for s in result.segments), result.language


def _join(segments: tuple[Segment, ...]) -> str:
    return " ".join(s.text for s in segments)  # each stripped and with a word (`_Backend.transcribe`)


def open_stt(cfg: Any, *, temperatures: Sequence[float] = TEMPERATURES,  # cfg: edge_ai.config.Config
             beam_size: int | None = None) -> SpeechToText:
    """The speech-to-text backend the settings choose (voice.stt_backend, voice.stt_model, voice.language;
    model.threads for CPU threads), decoding with a beam of `beam_size` (default voice.stt_beam_size)."""
    voice = cfg.voice
    options = {"language": voice.language, "threads": cfg.model.threads,
               "beam_size": voice.stt_beam_size if beam_size is None else beam_size, "temperatures": temperatures}
    if voice.stt_backend == "faster-whisper":
        from runtime.audio.whisper_model import whisper_base

        folder = Path(voice.stt_model).expanduser() if voice.stt_model else whisper_base()
        return FasterWhisperSTT(folder, **options)
    if voice.stt_backend == "whisper":
        return OpenAIWhisperSTT(voice.stt_model, **options)
    if voice.stt_backend == "onnx":
        return OnnxWhisperSTT(voice.stt_model, **options)
    raise EdgeAIError(f"voice.stt_backend '{voice.stt_backend}' is not one of faster-whisper, whisper, onnx")

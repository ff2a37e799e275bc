"""Text-to-speech behind one small protocol: espeak-ng (default) or a piper voice on onnxruntime.

    tts = open_tts(cfg)                  # the backend voice.tts_backend names, checked up front
    samples = tts.synthesize("Hello.")   # float32 mono at tts.sample_rate, one chunk of text

Callers synthesise one speakable chunk at a time (runtime.audio.speakable) so the first chunk
plays while later ones are made.

espeak-ng runs as a subprocess per chunk: it starts in milliseconds, and a process per chunk
keeps a stuck or crashed synthesiser from taking the app down. It writes a WAV to stdout whose
RIFF sizes are placeholders (it streams), so the header's format fields are read and the samples
taken to the end of the output.

A piper voice is a VITS model exported to ONNX (`voice.onnx`) with its config beside it
(`voice.onnx.json`: sample rate, the espeak-ng voice that phonemises its text, the phoneme id map
and inference scales). Its text is turned into IPA by espeak-ng, the punctuation that ends each
clause put back (the voice was trained with it), decomposed into code points (NFD), mapped to ids
with the pad id between phonemes and BOS/EOS around them, and run with the inputs piper exports:
`input` [1, n] int64, `input_lengths` [1] int64, `scales` [3] float32 (noise, length, noise_w),
and `sid` [1] int64 for voices with several speakers.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_ai.config import Config
from edge_ai.errors import EdgeAIError, InternalError, NotFoundError

log = logging.getLogger(__name__)

ESPEAK_WPM = 175  # espeak-ng's default speed: tts_rate 1.0
_ESPEAK_TIMEOUT = 60.0  # seconds for one chunk; espeak makes minutes of speech in a second


class TextToSpeech(Protocol):
    """A voice: text in, audio out."""

    name: str  # the backend and voice, for messages and benchmarks
    sample_rate: int  # of the samples synthesize() returns

    def synthesize(self, text: str) -> np.ndarray:
        """float32 mono samples in [-1, 1] at `sample_rate` for one chunk of text (empty for no words)."""
        ...


def open_tts(cfg: Config) -> TextToSpeech:
    """The configured voice, checked now so a bad setting fails before anything is said."""
    voice = cfg.voice
    if voice.tts_backend == "espeak":
        return EspeakTTS(voice.tts_voice, voice.tts_rate)
    if voice.tts_backend == "piper":
        if not voice.tts_model:
            raise EdgeAIError("tts_backend piper needs a voice file: set voice.tts_model to the piper voice's .onnx "
                              "(its .onnx.json beside it)")
        return PiperTTS(Path(voice.tts_model).expanduser(), speaker=voice.tts_voice, rate=voice.tts_rate)
    raise EdgeAIError(f"unknown tts_backend {voice.tts_backend!r}; use espeak or piper")


# --- espeak-ng ------------------------------------------------------------------------------------

def espeak_binary() -> str:
    """The espeak-ng executable, or a one-line error saying how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EdgeAIError("espeak-ng is not installed; install it (apt-get install espeak-ng) or choose another "
                          "voice.tts_backend")
    return path


def _run_espeak(args: list[str], text: str, voice: str) -> bytes:
    """espeak-ng's stdout for `text` (given on stdin, so text starting with '-' is not an option)."""
    try:
        done = subprocess.run([espeak_binary(), "-b", "1", "-v", voice, *args], input=text.encode("utf-8"),
                              capture_output=True, timeout=_ESPEAK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise InternalError(f"espeak-ng took over {_ESPEAK_TIMEOUT:.0f} s on {len(text)} characters") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        if "voice does not exist" in message:
            raise EdgeAIError(f"espeak-ng has no voice {voice!r}; set voice.tts_voice to one listed by "
                              "`espeak-ng --voices` (e.g. en-us, en-gb, de, fr)")
        raise InternalError(f"espeak-ng failed (exit {done.returncode}): {message[:200] or 'no message'}")
    return done.stdout


def parse_streamed_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(float32 mono samples, rate) from a WAV written to a pipe: sizes in its header are not trusted,
    the data chunk runs to the end of the bytes."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InternalError("espeak-ng wrote no WAV audio")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", data, body)  # format, channels, rate, byte rate, align, bits
        elif chunk_id == b"data":
            if fmt is None or fmt[0] != 1 or fmt[5] != 16:
                raise InternalError(f"espeak-ng wrote a WAV that is not 16-bit PCM (format {fmt})")
            channels, rate = fmt[1], fmt[2]
            raw = data[body:]
            raw = raw[:len(raw) - len(raw) % (2 * channels)]
            samples = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).mean(axis=1)
            return (samples / 32768.0).astype(np.float32), rate
        pos = body + size + (size & 1)
    raise InternalError("espeak-ng's WAV has no data chunk")


@dataclass
class EspeakTTS:
    """espeak-ng in a subprocess per chunk: robotic but instant, offline, and in ~100 languages."""

    voice: str = "en-us"
    rate: float = 1.0  # 1.0 = espeak-ng's 175 words per minute

    def __post_init__(self) -> None:
        self.name = f"espeak:{self.voice}"
        _, self.sample_rate = parse_streamed_wav(self._wav(" "))  # checks the binary and the voice

    def _wav(self, text: str) -> bytes:
        return _run_espeak(["--stdout", "-s", str(round(ESPEAK_WPM * self.rate))], text, self.voice)

    def synthesize(self, text: str) -> np.ndarray:
        if not text.strip():
            return np.zeros(0, dtype=np.float32)
        samples, rate = parse_streamed_wav(self._wav(text))
        if rate != self.sample_rate:
            raise InternalError(f"espeak-ng changed its sample rate from {self.sample_rate} to {rate} Hz")
        return samples


# --- piper ----------------------------------------------------------------------------------------

PIPER_INPUTS = ("input", "input_lengths", "scales")  # plus "sid" for voices with several speakers
BOS, EOS, PAD = "^", "$", "_"
_CLAUSE_PUNCTUATION = re.compile(r"[.!?,;:]+(?=\s|$)")
_LANGUAGE_SWITCH = re.compile(r"\([a-z-]+\)")  # espeak marks words it reads in another language: (fr)


@dataclass(frozen=True)
class PiperConfig:
    """What synthesis needs from a piper voice's .onnx.json."""

    sample_rate: int
    espeak_voice: str
    phoneme_type: str  # "espeak" (IPA from espeak-ng) or "text" (the characters themselves)
    phoneme_id_map: dict[str, list[int]]
    num_speakers: int
    speaker_id_map: dict[str, int]
    noise_scale: float
    length_scale: float
    noise_w: float

    @classmethod
    def load(cls, path: Path) -> PiperConfig:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            inference = data.get("inference", {})
            config = cls(sample_rate=int(data["audio"]["sample_rate"]), espeak_voice=data["espeak"]["voice"],
                         phoneme_type=data.get("phoneme_type", "espeak"),
                         phoneme_id_map={str(k): [int(i) for i in v] for k, v in data["phoneme_id_map"].items()},
                         num_speakers=int(data.get("num_speakers", 1)),
                         speaker_id_map={str(k): int(v) for k, v in data.get("speaker_id_map", {}).items()},
                         noise_scale=float(inference.get("noise_scale", 0.667)),
                         length_scale=float(inference.get("length_scale", 1.0)),
                         noise_w=float(inference.get("noise_w", 0.8)))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EdgeAIError(f"{path} is not a piper voice config ({type(exc).__name__}: {exc}); use the .onnx.json "
                              "that came with the voice") from None
        if config.phoneme_type not in ("espeak", "text"):
            raise EdgeAIError(f"{path}: phoneme_type {config.phoneme_type!r} is not supported; piper voices with "
                              "espeak or text phonemes work")
        missing = [s for s in (BOS, EOS, PAD) if s not in config.phoneme_id_map]
        if missing:
            raise EdgeAIError(f"{path}: phoneme_id_map lacks {' '.join(missing)}; use the .onnx.json of the voice")
        return config


class PiperTTS:
    """A piper (VITS) voice on onnxruntime; its text phonemised by espeak-ng."""

    def __init__(self, model: Path, speaker: str = "", rate: float = 1.0, threads: int = 0) -> None:
        from runtime.onnx_session import open_session

        if not model.is_file():
            raise NotFoundError(f"piper voice {model} does not exist; set voice.tts_model to the voice's .onnx file")
        config_path = model.with_name(model.name + ".json")
        if not config_path.is_file():
            raise EdgeAIError(f"piper voice {model} has no config {config_path.name} beside it; put the voice's "
                              ".onnx.json next to the .onnx")
        self.config = PiperConfig.load(config_path)
        self.sample_rate = self.config.sample_rate
        self.name = f"piper:{model.stem}"
        self.rate = rate
        self._session = open_session(model, threads)
        self._check_inputs(model, {i.name for i in self._session.get_inputs()})
        self._sid = self._speaker_id(speaker)
        if self.config.phoneme_type == "espeak":
            _run_espeak(["-q", "--ipa"], " ", self.config.espeak_voice)  # checks espeak-ng and the voice now

    def _check_inputs(self, model: Path, names: set[str]) -> None:
        required = set(PIPER_INPUTS) | ({"sid"} if self.config.num_speakers > 1 else set())
        if not required <= names or not names <= set(PIPER_INPUTS) | {"sid"}:
            raise EdgeAIError(f"{model} is not a piper voice: its inputs are {', '.join(sorted(names))}, a piper voice "
                              f"takes {', '.join(sorted(required))}")
        self._takes_sid = "sid" in names

    def _speaker_id(self, speaker: str) -> int:
        """Multi-speaker voices take voice.tts_voice as a speaker name or number; others ignore it."""
        if self.config.num_speakers <= 1:
            return 0
        if speaker in self.config.speaker_id_map:
            return self.config.speaker_id_map[speaker]
        if speaker.isdigit() and int(speaker) < self.config.num_speakers:
            return int(speaker)
        if speaker in ("", "en-us"):  # the setting's default: the voice's first speaker
            return 0
        names = ", ".join(list(self.config.speaker_id_map)[:10]) or f"0-{self.config.num_speakers - 1}"
        raise EdgeAIError(f"this piper voice has no speaker {speaker!r}; set voice.tts_voice to one of {names}")

    def phonemes(self, text: str) -> list[str]:
        """The voice's phoneme symbols for `text` (one per code point, as piper trained them)."""
        if self.config.phoneme_type == "text":
            return list(unicodedata.normalize("NFD", text))
        ipa = self._espeak_ipa(text)
        return list(unicodedata.normalize("NFD", ipa))

    def _espeak_ipa(self, text: str) -> str:
        """IPA for `text`, one espeak-ng clause per line, with the clause's closing punctuation put back
        (espeak-ng drops it; piper voices pause and intone on it). When espeak-ng cut the text into
        other clauses than its punctuation shows (it also stops at 'Dr.'), clauses are joined by spaces."""
        out = _run_espeak(["-q", "--ipa"], text, self.config.espeak_voice).decode("utf-8", "replace")
        clauses = [_LANGUAGE_SWITCH.sub("", line).strip() for line in out.splitlines()]
        clauses = [c for c in clauses if c]
        text = text.strip()
        marks = [m.group(0)[-1] for m in _CLAUSE_PUNCTUATION.finditer(text)]
        if len(marks) != len(clauses):
            last = marks[-1] if marks and _CLAUSE_PUNCTUATION.search(text[-1]) else ""
            marks = [""] * (len(clauses) - 1) + [last]
        return " ".join(clause + mark for clause, mark in zip(clauses, marks))

    def phoneme_ids(self, phonemes: list[str]) -> list[int]:
        """BOS, then each known phoneme followed by the pad, then EOS (unknown symbols are skipped)."""
        table = self.config.phoneme_id_map
        ids = [*table[BOS], *table[PAD]]
        skipped = set()
        for phoneme in phonemes:
            if phoneme in table:
                ids += [*table[phoneme], *table[PAD]]
            else:
                skipped.add(phoneme)
        if skipped:
            log.info("piper voice %s has no id for phonemes %s", self.name, "".join(sorted(skipped)))
        return [*ids, *table[EOS]]

    def synthesize(self, text: str) -> np.ndarray:
        if not text.strip():
            return np.zeros(0, dtype=np.float32)
        ids = self.phoneme_ids(self.phonemes(text))
        config = self.config
        feeds: dict[str, Any] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([config.noise_scale, config.length_scale / self.rate, config.noise_w], dtype=np.float32),
        }
        if self._takes_sid:
            feeds["sid"] = np.array([self._sid], dtype=np.int64)
        try:
            audio = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32).reshape(-1)
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise InternalError(f"piper voice {self.name} failed on {len(ids)} phonemes: "
                                f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc!r}") from None
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if not np.isfinite(peak):
            raise InternalError(f"piper voice {self.name} produced non-finite audio")
        return audio / peak * 0.95 if peak > 1e-6 else np.zeros_like(audio)  # piper normalises each sentence's peak

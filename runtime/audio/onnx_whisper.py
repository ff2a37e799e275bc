"""Whisper speech-to-text on onnxruntime alone: numpy log-mel features, greedy decoding, timestamps.

    stt = OnnxWhisper(Path("whisper-base-onnx"))     # written by `edge-ai convert onnx --task automatic-speech-recognition`
    result = stt.transcribe(samples)                  # float32 mono 16 kHz
    result.text, result.language, [(s.start, s.end, s.text) for s in result.segments]

The folder holds optimum's export: `encoder_model.onnx` (log-mel [1, 80, 3000] -> hidden states),
`decoder_model.onnx` (the prompt, no cache) and `decoder_with_past_model.onnx` (one token with the
cache), plus `tokenizer.json` and `generation_config.json` (suppressed tokens, language ids).

Decoding follows openai-whisper's greedy path (`decoding.py`): the prompt is <|startoftranscript|>
<|lang|> <|transcribe|> (+ <|notimestamps|>); every step suppresses the tokens the model was
trained never to emit (blank at the start, special tokens always) and, with timestamps, applies
`ApplyTimestampRules`: the first token is a timestamp within `max_initial_timestamp`, timestamps
come in pairs (end of one segment, start of the next) and never go back, and a timestamp is
forced whenever the timestamps together are more probable than any single text token. Audio
longer than 30 s is cut into consecutive 30 s windows, each decoded on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_ai.errors import EdgeAIError
from runtime.audio.mel import CHUNK_LENGTH, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram, pad_or_trim
from runtime.onnx_session import open_session

SECONDS_PER_TIMESTAMP = 0.02  # <|0.00|>, <|0.02|>, ... as openai-whisper's tokenizer defines them


@dataclass(frozen=True)
class DecodeOptions:
    language: str | None = "en"  # language code ("en", "de"...); None: detect it from the audio
    task: str = "transcribe"  # or "translate" (to English)
    timestamps: bool = True  # segment timestamps; False adds <|notimestamps|> (a little faster)
    max_tokens: int = 224  # per 30 s window: openai's sample_len (half the decoder context)
    max_initial_timestamp: float = 1.0  # seconds: the first segment must start this early


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: list[Segment]
    language: str
    seconds: float = 0.0  # time spent transcribing
    audio_seconds: float = 0.0
    tokens: list[int] = field(default_factory=list)  # every text and timestamp token decoded

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0


class _Vocabulary:
    """The special token ids decoding needs, read from tokenizer.json and generation_config.json."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        for name in ("tokenizer.json", "generation_config.json"):
            if not (folder / name).is_file():
                raise EdgeAIError(f"{folder} has no {name}; pass a folder written by "
                                  "`edge-ai convert onnx --task automatic-speech-recognition`")
        try:
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            generation = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise EdgeAIError(f"{folder} has an unreadable tokenizer.json or generation_config.json ({exc})") from None

        def token(text: str) -> int:
            found = self.tokenizer.token_to_id(text)
            if found is None:
                raise EdgeAIError(f"{folder / 'tokenizer.json'} has no {text} token; it is not a Whisper tokenizer")
            return found

        self.eot = token("<|endoftext|>")
        self.sot = token("<|startoftranscript|>")
        self.no_timestamps = token("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1  # <|0.00|>: openai's layout, timestamps follow
        self.tasks = {"transcribe": token("<|transcribe|>"), "translate": token("<|translate|>")}
        self.languages = {name.strip("<|>"): int(i) for name, i in (generation.get("lang_to_id") or {}).items()}
        self.suppress = np.array(generation.get("suppress_tokens") or [], dtype=np.int64)
        self.suppress_at_begin = np.array(generation.get("begin_suppress_tokens") or [], dtype=np.int64)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode([t for t in tokens if t < self.eot])


class OnnxWhisper:
    """An exported Whisper folder, loaded once; `transcribe` is thread-compatible, not thread-safe."""

    def __init__(self, folder: Path, *, threads: int = 0) -> None:
        folder = folder.expanduser()
        if not folder.is_dir():
            raise EdgeAIError(f"{folder} is not a folder; export a Whisper model with `edge-ai convert onnx`")
        self.vocab = _Vocabulary(folder)
        self.encoder = open_session(folder / "encoder_model.onnx", threads)
        self.decoder = open_session(folder / "decoder_model.onnx", threads)
        self.decoder_with_past = open_session(folder / "decoder_with_past_model.onnx", threads)
        self.n_mels = int(self.encoder.get_inputs()[0].shape[1])
        self._present = [o.name for o in self.decoder.get_outputs()][1:]
        self._present_step = [o.name for o in self.decoder_with_past.get_outputs()][1:]

    # --- the API -------------------------------------------------------------------------------

    def transcribe(self, samples: np.ndarray, options: DecodeOptions = DecodeOptions()) -> Transcript:
        """Text and segments of 16 kHz mono float32 `samples` (any length; 30 s windows)."""
        start = time.perf_counter()
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if options.task not in self.vocab.tasks:
            raise EdgeAIError(f"unknown task '{options.task}'; use transcribe or translate")
        segments: list[Segment] = []
        tokens: list[int] = []
        language = options.language
        for offset in range(0, max(len(samples), 1), N_SAMPLES):
            window = samples[offset:offset + N_SAMPLES]
            encoded = self.encode(window)
            if language is None:
                language = self.detect_language(encoded)[0]
            window_tokens = self._greedy(encoded, language, options, len(window) / SAMPLE_RATE)
            tokens.extend(window_tokens)
            segments.extend(self._segments(window_tokens, offset / SAMPLE_RATE, len(window) / SAMPLE_RATE,
                                           options.timestamps))
        text = "".join(s.text for s in segments).strip()
        return Transcript(text, segments, language or "", time.perf_counter() - start, len(samples) / SAMPLE_RATE,
                          tokens)

    def encode(self, samples: np.ndarray) -> np.ndarray:
        """Encoder hidden states [1, 1500, d] of up to 30 s of audio (padded with silence)."""
        features = log_mel_spectrogram(pad_or_trim(samples), self.n_mels)
        return self.encoder.run(None, {"input_features": features[None]})[0]

    def detect_language(self, encoded: np.ndarray) -> tuple[str, float]:
        """The most probable language code after <|startoftranscript|> and its probability."""
        if not self.vocab.languages:
            raise EdgeAIError("this Whisper model is English-only or has no language ids; pass a language")
        logits = self.decoder.run(["logits"], {"input_ids": np.array([[self.vocab.sot]], dtype=np.int64),
                                               "encoder_hidden_states": encoded})[0][0, -1]
        ids = np.array(list(self.vocab.languages.values()))
        probs = np.exp(logits[ids] - logits[ids].max())
        probs /= probs.sum()
        best = int(probs.argmax())
        return list(self.vocab.languages)[best], float(probs[best])

    # --- decoding ------------------------------------------------------------------------------

    def _prompt(self, language: str, options: DecodeOptions) -> list[int]:
        prompt = [self.vocab.sot]
        if self.vocab.languages:
            if language not in self.vocab.languages:
                raise EdgeAIError(f"unknown language '{language}'; this model knows {', '.join(self.vocab.languages)}")
            prompt.append(self.vocab.languages[language])
        prompt.append(self.vocab.tasks[options.task])
        if not options.timestamps:
            prompt.append(self.vocab.no_timestamps)
        return prompt

    def _steps(self, encoded: np.ndarray, prompt: list[int]) -> Iterator[np.ndarray]:
        """Next-token logits after the prompt, then after each token sent back into the generator."""
        outputs = self.decoder.run(None, {"input_ids": np.array([prompt], dtype=np.int64),
                                          "encoder_hidden_states": encoded})
        cache = {name.replace("present.", "past_key_values."): value
                 for name, value in zip(self._present, outputs[1:])}
        while True:
            token = yield outputs[0][0, -1]
            outputs = self.decoder_with_past.run(None, {"input_ids": np.array([[token]], dtype=np.int64), **cache})
            for name, value in zip(self._present_step, outputs[1:]):
                cache[name.replace("present.", "past_key_values.")] = value  # the encoder's entries stay

    def _greedy(self, encoded: np.ndarray, language: str, options: DecodeOptions, duration: float) -> list[int]:
        steps = self._steps(encoded, self._prompt(language, options))
        logits = next(steps)
        tokens: list[int] = []
        max_initial = round(options.max_initial_timestamp / SECONDS_PER_TIMESTAMP)
        last_timestamp = self.vocab.timestamp_begin + int(round(min(duration, CHUNK_LENGTH) / SECONDS_PER_TIMESTAMP))
        while len(tokens) < options.max_tokens:
            scores = logits.astype(np.float64)
            scores[self.vocab.suppress] = -np.inf
            if not tokens:
                scores[self.vocab.suppress_at_begin] = -np.inf
            if options.timestamps:
                scores = self._timestamp_rules(scores, tokens, max_initial, last_timestamp)
            token = int(scores.argmax())
            if token == self.vocab.eot:
                break
            tokens.append(token)
            logits = steps.send(token)
        steps.close()
        return tokens

    def _timestamp_rules(self, scores: np.ndarray, tokens: list[int], max_initial: int,
                         last_timestamp: int) -> np.ndarray:
        """openai-whisper's ApplyTimestampRules on one step's scores (returns log-probabilities)."""
        begin = self.vocab.timestamp_begin
        scores[self.vocab.no_timestamps] = -np.inf
        scores[last_timestamp + 1:] = -np.inf  # nothing after the end of the audio in this window
        last_was_timestamp = len(tokens) >= 1 and tokens[-1] >= begin
        penultimate_was_timestamp = len(tokens) < 2 or tokens[-2] >= begin
        if last_was_timestamp:
            if penultimate_was_timestamp:  # a pair closed (or the first one): text must follow
                scores[begin:] = -np.inf
            else:  # text then a timestamp: the segment's end, so the next is a timestamp or the end
                scores[:self.vocab.eot] = -np.inf
        stamps = [t for t in tokens if t >= begin]
        if stamps:  # timestamps never go back; a new segment starts after the last one ended
            floor = stamps[-1] if last_was_timestamp and not penultimate_was_timestamp else stamps[-1] + 1
            scores[begin:floor] = -np.inf
        if not tokens:  # the first token is a timestamp, early enough
            scores[:begin] = -np.inf
            scores[begin + max_initial + 1:] = -np.inf
        finite = scores[np.isfinite(scores)]
        logprobs = scores - (finite.max() + np.log(np.exp(finite - finite.max()).sum()))
        stamp_logprobs = logprobs[begin:]
        if np.isfinite(stamp_logprobs).any():
            top = stamp_logprobs[np.isfinite(stamp_logprobs)]
            stamp_total = top.max() + np.log(np.exp(top - top.max()).sum())
            if stamp_total > logprobs[:begin].max():
                logprobs[:begin] = -np.inf
        return logprobs

    def _segments(self, tokens: list[int], offset: float, duration: float, timestamps: bool) -> list[Segment]:
        """Segments between timestamp tokens (one segment for the window without timestamps)."""
        begin = self.vocab.timestamp_begin
        if not timestamps:
            text = self.vocab.decode(tokens)
            return [Segment(offset, offset + duration, text, tuple(tokens))] if text.strip() else []
        segments: list[Segment] = []
        start: float | None = None
        text_tokens: list[int] = []
        for token in tokens:
            if token < begin:
                text_tokens.append(token)
                continue
            time_ = offset + (token - begin) * SECONDS_PER_TIMESTAMP
            if start is not None and text_tokens:
                segments.append(Segment(start, time_, self.vocab.decode(text_tokens), tuple(text_tokens)))
                text_tokens, start = [], None
            else:
                start = time_
        if text_tokens:  # the window ended mid-segment
            segments.append(Segment(start if start is not None else offset, offset + duration,
                                    self.vocab.decode(text_tokens), tuple(text_tokens)))
        return segments

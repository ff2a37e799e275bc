"""Whisper speech-to-text on onnxruntime alone: numpy log-mel features, greedy or beam search decoding
with timestamps, and faster-whisper's temperature fallback.

    stt = OnnxWhisper(Path("whisper-base-onnx"))     # written by `edge-ai convert onnx --task automatic-speech-recognition`
    result = stt.transcribe(samples)                  # float32 mono 16 kHz
    result.text, result.language, [(s.start, s.end, s.text) for s in result.segments]

The folder holds optimum's export: `encoder_model.onnx` (log-mel [1, 80, 3000] -> hidden states),
`decoder_model.onnx` (the prompt, no cache) and `decoder_with_past_model.onnx` (one token with the
cache), plus `tokenizer.json` and `generation_config.json` (suppressed tokens, language ids).

Decoding follows openai-whisper (`decoding.py`): the prompt is <|startoftranscript|> <|lang|>
<|transcribe|> (+ <|notimestamps|>); every step suppresses the tokens the model was trained never
to emit (blank at the start, special tokens always) and, with timestamps, applies
`ApplyTimestampRules`: the first token is a timestamp within `max_initial_timestamp`, timestamps
come in pairs (end of one segment, start of the next) and never go back, and a timestamp is
forced whenever the timestamps together are more probable than any single text token. Audio
longer than 30 s is cut into consecutive 30 s windows, each decoded on its own.

Each window is decoded at temperature 0 first (greedy, or beam search with `beam_size` > 1) and
checked the way openai's and faster-whisper's `transcribe` do, against hallucinated output: text
that compresses too well (gzip ratio > 2.4: a phrase repeated) or tokens the model itself found
improbable (mean log-probability < -1) is decoded again at the next temperature, sampling
`best_of` candidates and keeping the most probable; if every temperature fails, the attempt with
the best mean log-probability is kept. A window where <|nospeech|> is likely (> 0.6) and the text
improbable is silence: it yields no segment.
"""

from __future__ import annotations

import json
import time
import zlib
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
    beam_size: int = 1  # hypotheses kept at temperature 0: 1 is greedy; 5 is faster-whisper's default
    best_of: int = 5  # candidates sampled at each fallback temperature; the most probable is kept
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # tried in turn while a result fails
    compression_ratio_threshold: float | None = 2.4  # gzip ratio of the text above this: a loop, retry hotter
    log_prob_threshold: float | None = -1.0  # mean token log-probability below this: retry hotter
    no_speech_threshold: float | None = 0.6  # <|nospeech|> probability above this (and improbable text): silence
    seed: int = 0  # the sampler's seed, so the same audio gives the same transcript


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Attempt:
    """One decode of one 30 s window, with what the fallback policy judged it by."""

    temperature: float
    tokens: tuple[int, ...]
    avg_logprob: float  # sum of the chosen tokens' log-probabilities / (tokens + 1 for the end)
    compression_ratio: float  # bytes of the text / bytes of its zlib compression
    no_speech_prob: float  # probability of <|nospeech|> right after <|startoftranscript|>


@dataclass(frozen=True)
class Window:
    """How one 30 s window was decoded: every attempt in order, the one kept, and whether it was silence."""

    attempts: tuple[Attempt, ...]
    kept: Attempt
    silent: bool


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: list[Segment]
    language: str
    seconds: float = 0.0  # time spent transcribing
    audio_seconds: float = 0.0
    tokens: list[int] = field(default_factory=list)  # every text and timestamp token decoded
    windows: list[Window] = field(default_factory=list)

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
        self.no_speech = token("<|nocaptions|>" if self.tokenizer.token_to_id("<|nospeech|>") is None
                               else "<|nospeech|>")  # the name changed with large-v3's tokenizer
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
        self._encoder_cache = [i.name for i in self.decoder_with_past.get_inputs()
                               if i.name.startswith("past_key_values.") and
                               i.name.replace("past_key_values.", "present.") not in self._present_step]

    # --- the API -------------------------------------------------------------------------------

    def transcribe(self, samples: np.ndarray, options: DecodeOptions = DecodeOptions()) -> Transcript:
        """Text and segments of 16 kHz mono float32 `samples` (any length; 30 s windows)."""
        start = time.perf_counter()
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        _check(options, self.vocab)
        segments: list[Segment] = []
        tokens: list[int] = []
        windows: list[Window] = []
        language = options.language
        for offset in range(0, max(len(samples), 1), N_SAMPLES):
            window = samples[offset:offset + N_SAMPLES]
            encoded = self.encode(window)
            if language is None:
                language = self.detect_language(encoded)[0]
            decoded = self._decode_window(encoded, language, options, len(window) / SAMPLE_RATE)
            windows.append(decoded)
            if decoded.silent:
                continue
            tokens.extend(decoded.kept.tokens)
            segments.extend(self._segments(list(decoded.kept.tokens), offset / SAMPLE_RATE, len(window) / SAMPLE_RATE,
                                           options.timestamps))
        text = "".join(s.text for s in segments).strip()
        return Transcript(text, segments, language or "", time.perf_counter() - start, len(samples) / SAMPLE_RATE,
                          tokens, windows)

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

    def _decode_window(self, encoded: np.ndarray, language: str, options: DecodeOptions, duration: float) -> Window:
        """The temperature fallback (faster-whisper's `generate_with_fallback`) over one window."""
        prompt = self._prompt(language, options)
        attempts: list[Attempt] = []
        for temperature in options.temperatures:
            tokens, avg_logprob, no_speech_prob = self._decode(encoded, prompt, options, temperature, duration)
            text = self.vocab.decode(tokens)
            attempt = Attempt(temperature, tuple(tokens), avg_logprob, compression_ratio(text), no_speech_prob)
            attempts.append(attempt)
            if not _needs_fallback(attempt, options):
                kept = attempt
                break
        else:  # every temperature failed: the most probable attempt that is not a loop, else the most probable
            not_loops = [a for a in attempts if options.compression_ratio_threshold is None
                         or a.compression_ratio <= options.compression_ratio_threshold]
            kept = max(not_loops or attempts, key=lambda a: a.avg_logprob)
        silent = (options.no_speech_threshold is not None and kept.no_speech_prob > options.no_speech_threshold
                  and not (options.log_prob_threshold is not None and kept.avg_logprob > options.log_prob_threshold))
        return Window(tuple(attempts), kept, silent)

    def _decode(self, encoded: np.ndarray, prompt: list[int], options: DecodeOptions, temperature: float,
                duration: float) -> tuple[list[int], float, float]:
        """(tokens, mean log-probability, <|nospeech|> probability) of one decode of one window: greedy
        or beam search at temperature 0, the best of `best_of` samples above it.

        All hypotheses run as one batch through the decoder with past; after each step the KV cache
        rows are reordered to follow the hypotheses they came from (beam search) or dropped with the
        hypotheses that ended."""
        outputs = self.decoder.run(None, {"input_ids": np.array([prompt], dtype=np.int64),
                                          "encoder_hidden_states": encoded})
        no_speech_prob = float(_softmax(outputs[0][0, 0].astype(np.float64))[self.vocab.no_speech])
        beam = temperature == 0 and options.beam_size > 1
        width = options.beam_size if beam else (options.best_of if temperature > 0 else 1)
        cache = {name.replace("present.", "past_key_values."): np.repeat(value, width, axis=0)
                 for name, value in zip(self._present, outputs[1:])}
        logits = np.repeat(outputs[0][:, -1], width, axis=0)
        hypotheses: list[list[int]] = [[] for _ in range(width)]
        sums = np.zeros(width)
        finished: list[tuple[list[int], float]] = []
        rng = np.random.default_rng(options.seed)
        max_initial = round(options.max_initial_timestamp / SECONDS_PER_TIMESTAMP)
        # the last timestamp at or before the end of the audio (rounded down: never past it)
        last_timestamp = self.vocab.timestamp_begin + int(min(duration, CHUNK_LENGTH) / SECONDS_PER_TIMESTAMP + 1e-6)
        for _ in range(options.max_tokens):
            logprobs = np.stack([self._logprobs(row, tokens, options, max_initial, last_timestamp)
                                 for row, tokens in zip(logits, hypotheses)])
            if beam:
                hypotheses, sums, sources = _beam_step(hypotheses, sums, logprobs, width, self.vocab.eot, finished)
                if len(finished) >= width:
                    break
            else:
                if temperature > 0:
                    chosen = [_sample(row / temperature, rng) for row in logprobs]
                else:
                    chosen = [int(row.argmax()) for row in logprobs]
                sums = sums + logprobs[np.arange(len(chosen)), chosen]
                for tokens, token, total in zip(hypotheses, chosen, sums):
                    if token == self.vocab.eot:
                        finished.append((tokens, float(total)))
                    else:
                        tokens.append(token)
                sources = [i for i, token in enumerate(chosen) if token != self.vocab.eot]
                hypotheses, sums = [hypotheses[i] for i in sources], sums[sources]
            if not hypotheses:
                break
            for name in self._present_step:  # the self-attention cache follows its hypotheses
                key = name.replace("present.", "past_key_values.")
                cache[key] = cache[key][sources]
            if len(sources) != len(cache[self._encoder_cache[0]]):  # hypotheses ended: fewer rows
                for key in self._encoder_cache:
                    cache[key] = cache[key][:len(sources)]
            outputs = self.decoder_with_past.run(None, {"input_ids": np.array([[t[-1]] for t in hypotheses],
                                                                              dtype=np.int64), **cache})
            logits = outputs[0][:, -1]
            for name, value in zip(self._present_step, outputs[1:]):
                cache[name.replace("present.", "past_key_values.")] = value
        finished.extend((tokens, float(total)) for tokens, total in zip(hypotheses, sums))  # cut at max_tokens
        tokens, total = max(finished[:max(width, 1)] if beam else finished,
                            key=lambda item: item[1] / max(len(item[0]), 1))  # openai's ranker, no length penalty
        return tokens, total / (len(tokens) + 1), no_speech_prob

    def _logprobs(self, logits: np.ndarray, tokens: list[int], options: DecodeOptions, max_initial: int,
                  last_timestamp: int) -> np.ndarray:
        """One hypothesis' next-token log-probabilities after suppression and the timestamp rules."""
        scores = logits.astype(np.float64)
        scores[self.vocab.suppress] = -np.inf
        if not tokens:
            scores[self.vocab.suppress_at_begin] = -np.inf
        if options.timestamps:
            return self._timestamp_rules(scores, tokens, max_initial, last_timestamp)
        return _log_softmax(scores)

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
        logprobs = _log_softmax(scores)
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


def _check(options: DecodeOptions, vocab: _Vocabulary) -> None:
    if options.task not in vocab.tasks:
        raise EdgeAIError(f"unknown task '{options.task}'; use transcribe or translate")
    if options.beam_size < 1 or options.best_of < 1:
        raise EdgeAIError(f"beam size {options.beam_size} and best-of {options.best_of} must be at least 1")
    if not options.temperatures or any(t < 0 for t in options.temperatures):
        raise EdgeAIError(f"temperatures {options.temperatures} must be a non-empty list of values >= 0")


def compression_ratio(text: str) -> float:
    """Bytes of `text` over bytes of its zlib compression: ~1.5 for speech, above 2.4 for a phrase on repeat."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _needs_fallback(attempt: Attempt, options: DecodeOptions) -> bool:
    """faster-whisper's test: a loop or improbable text is retried hotter, unless the window is silence."""
    too_repetitive = (options.compression_ratio_threshold is not None
                      and attempt.compression_ratio > options.compression_ratio_threshold)
    improbable = options.log_prob_threshold is not None and attempt.avg_logprob < options.log_prob_threshold
    silence = (options.no_speech_threshold is not None and attempt.no_speech_prob > options.no_speech_threshold
               and improbable)
    return (too_repetitive or improbable) and not silence


def _beam_step(hypotheses: list[list[int]], sums: np.ndarray, logprobs: np.ndarray, width: int, eot: int,
               finished: list[tuple[list[int], float]]) -> tuple[list[list[int]], np.ndarray, list[int]]:
    """openai's BeamSearchDecoder step (patience 1): the `width` best continuations that do not end,
    each with the row it came from; the ones that end (better than those) go to `finished`."""
    scores: dict[tuple[int, ...], float] = {}
    sources: dict[tuple[int, ...], int] = {}
    for row, (tokens, total) in enumerate(zip(hypotheses, sums)):
        for token in np.argsort(-logprobs[row], kind="stable")[:width + 1]:
            sequence = (*tokens, int(token))
            if np.isfinite(logprobs[row, token]) and sequence not in scores:
                scores[sequence], sources[sequence] = float(total + logprobs[row, token]), row
    kept: list[list[int]] = []
    kept_sums: list[float] = []
    kept_sources: list[int] = []
    for sequence in sorted(scores, key=scores.__getitem__, reverse=True):
        if sequence[-1] == eot:
            if len(finished) < width:
                finished.append((list(sequence[:-1]), scores[sequence]))
        else:
            kept.append(list(sequence))
            kept_sums.append(scores[sequence])
            kept_sources.append(sources[sequence])
            if len(kept) == width:
                break
    return kept, np.array(kept_sums), kept_sources


def _sample(logits: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(len(logits), p=_softmax(logits)))


def _softmax(x: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    out = np.zeros_like(x, dtype=np.float64)
    shifted = np.exp(x[finite] - x[finite].max())
    out[finite] = shifted / shifted.sum()
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    finite = x[np.isfinite(x)]
    return x - (finite.max() + np.log(np.exp(finite - finite.max()).sum()))

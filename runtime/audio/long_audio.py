"""Transcribing audio of any length as it streams in: window by window, with bounded memory.

    job = LongTranscription(stt, read_audio_blocks(path))
    for segment in job:                 # times from the start of the audio, as each window is decoded
        print(segment.start, segment.text)
    job.language, job.duration

Whisper reads 30 s at a time. Audio is buffered up to one window and decoded; the segments of a
full window are kept except the last, which may be cut off by the window's edge: the next window
starts where it started, so a word on the boundary is decoded whole (openai-whisper's own `seek`
rule). The text kept so far, its last 200 characters, is the next window's prompt, as whisper does
with `condition_on_previous_text`, until a window without words: across minutes of silence Whisper
would rather repeat an old prompt than hear new words. Memory is one window plus one read block, whatever the length.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np

from runtime.audio.stt import SAMPLE_RATE, Segment, SpeechToText, Word

WINDOW_SECONDS = 30.0  # Whisper's input length
MIN_ADVANCE = 1.0  # seconds: a window always moves the stream on at least this much
SILENT_KEEP = 5.0  # seconds kept from a window with no words: speech cut off by its edge is often not transcribed
PROMPT_CHARS = 200


class LongTranscription:
    """Iterate to transcribe; `language`, `duration` and `decode_seconds` are filled in as it goes."""

    def __init__(self, stt: SpeechToText, blocks: Iterable[np.ndarray], *, window_seconds: float = WINDOW_SECONDS,
                 word_timestamps: bool = False) -> None:
        self.stt = stt
        self.word_timestamps = word_timestamps  # also tightens segment times to the words (Whisper's own start at 0.0)
        self.blocks = blocks
        self.window = int(window_seconds * SAMPLE_RATE)
        self.language = ""
        self.duration = 0.0  # seconds of audio read so far (all of it once iteration ends)
        self.decode_seconds = 0.0
        self.windows = 0  # decodes run
        self._prompt = ""

    def __iter__(self) -> Iterator[Segment]:
        buffer = np.zeros(0, dtype=np.float32)
        offset = 0.0  # seconds of audio before buffer[0]
        for block in self.blocks:
            self.duration += len(block) / SAMPLE_RATE
            buffer = np.concatenate([buffer, block])
            while len(buffer) >= self.window:
                segments, used = self._decode(buffer[:self.window], offset, final=False)
                yield from segments
                buffer = buffer[used:]
                offset += used / SAMPLE_RATE
        if len(buffer):
            yield from self._decode(buffer, offset, final=True)[0]

    def _decode(self, clip: np.ndarray, offset: float, *, final: bool) -> tuple[list[Segment], int]:
        """(segments to emit, in stream time; samples of `clip` they account for)."""
        start = time.perf_counter()
        result = self.stt.transcribe(clip, prompt=self._prompt, word_timestamps=self.word_timestamps)
        self.decode_seconds += time.perf_counter() - start
        self.windows += 1
        self.language = self.language or result.language
        segments = list(result.segments)
        used = len(clip)
        if not final:
            if segments and segments[-1].start >= MIN_ADVANCE:  # hold the last segment back: it may be cut off
                used = int(segments[-1].start * SAMPLE_RATE)
                segments = segments[:-1]
            elif not segments:  # no words: speech may begin at the edge, decode that part again whole
                used = len(clip) - int(SILENT_KEEP * SAMPLE_RATE)
        kept = [Segment(s.start + offset, s.end + offset, s.text,
                        tuple(Word(w.text, w.start + offset, w.end + offset) for w in s.words))
                for s in segments]
        if kept:
            self._prompt = (self._prompt + " " + " ".join(s.text for s in kept)).strip()[-PROMPT_CHARS:]
        elif not result.segments:  # a window without words ends the context: an old prompt would be copied
            self._prompt = ""
        return kept, used

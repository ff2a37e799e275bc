"""Transcribing audio of any length as it streams in: window by window, with bounded memory.

    job = LongTranscription(stt, read_audio_blocks(path))
    for segment in job:                 # times from the start of the audio, as each window is decoded
        print(segment.start, segment.text)
    job.language, job.duration

Whisper reads 30 s at a time. Silences of two seconds or more are cut down first (`SilenceCutter`,
Silero VAD): Whisper hallucinates in them, misdates the words after them, and once left a sentence
out after 27 s of silence. Times are mapped back to the audio's own. A window then ends at the last
cut it holds, in a silence between sentences, and all its segments are kept; a window with no cut
(speech without a 2-s pause, or `cut_silence=False`, which decodes everything: music, speech Silero
does not hear) keeps its segments but the last, which may be cut off by the window's edge: the next
window starts where it started, so a word on the boundary is decoded whole (openai-whisper's own
`seek` rule). A segment is split where its words pause for a second (one subtitle per sentence across
a cut). A segment with more words than anyone says in its time is left out: Whisper now and then writes
a phrase it did not hear, or its prompt again, into a fraction of a second at a window's end. The text
kept so far, its last 200 characters, is the next window's prompt, as whisper does with
`condition_on_previous_text`, until a window without words: across minutes of silence Whisper would
rather repeat an old prompt than hear new words. Memory is one window plus one read block,
whatever the length.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import numpy as np

from runtime.audio.silence_cut import SilenceCutter
from runtime.audio.stt import SAMPLE_RATE, Segment, SpeechToText, Word, said_in_time

WINDOW_SECONDS = 30.0  # Whisper's input length
MIN_ADVANCE = 1.0  # seconds: a window always moves the stream on at least this much
SILENT_KEEP = 5.0  # seconds kept from a window with no words: speech cut off by its edge is often not transcribed
PROMPT_CHARS = 200
# seconds of a clip of speech (its silences cut) after the last segment from which the rest is decoded again:
# Whisper now and then ends a window's text early (two sentences left out of a 21-s window of six)
UNHEARD_TAIL = 1.5
SPLIT_PAUSE = 1.0  # seconds between two words that end a segment


class LongTranscription:
    """Iterate to transcribe; `language`, `duration` and `decode_seconds` are filled in as it goes."""

    def __init__(self, stt: SpeechToText, blocks: Iterable[np.ndarray], *, window_seconds: float = WINDOW_SECONDS,
                 word_timestamps: bool = False, cut_silence: bool = True) -> None:
        self.stt = stt
        self.word_timestamps = word_timestamps  # also tightens segment times to the words (Whisper's own start at 0.0)
        self.window = int(window_seconds * SAMPLE_RATE)
        self.language = ""
        self.duration = 0.0  # seconds of audio read so far (all of it once iteration ends)
        self.decode_seconds = 0.0
        self.windows = 0  # decodes run
        self._prompt = ""
        counted = self._counted(blocks)
        self._cutter = SilenceCutter(counted) if cut_silence else None
        self._audio: Iterable[np.ndarray] = self._cutter if self._cutter is not None else counted  # what is decoded

    def _counted(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            self.duration += len(block) / SAMPLE_RATE
            yield block

    def __iter__(self) -> Iterator[Segment]:
        buffer = np.zeros(0, dtype=np.float32)
        offset = 0.0  # seconds of audio before buffer[0] (of the audio with its silences cut)
        for block in self._audio:
            buffer = np.concatenate([buffer, block])
            while len(buffer) >= self.window:
                cut = self._cutter.last_cut(offset + MIN_ADVANCE, offset + self.window / SAMPLE_RATE) if self._cutter \
                    else None
                clip = buffer[:round((cut - offset) * SAMPLE_RATE)] if cut is not None else buffer[:self.window]
                segments, used = self._decode(clip, offset, ends_in_silence=cut is not None)
                yield from segments
                buffer = buffer[used:]
                offset += used / SAMPLE_RATE
                if self._cutter is not None:
                    self._cutter.forget_before(offset)
        while len(buffer):  # the rest, which ends where the audio does
            segments, used = self._decode(buffer, offset, ends_in_silence=True)
            yield from segments
            buffer = buffer[used:]
            offset += used / SAMPLE_RATE

    def _time(self, seconds: float, *, end: bool = False) -> float:
        """A time in the audio decoded -> the time in the audio read."""
        return self._cutter.to_stream(seconds, end=end) if self._cutter is not None else seconds

    def _decode(self, clip: np.ndarray, offset: float, *, ends_in_silence: bool) -> tuple[list[Segment], int]:
        """(segments to emit, in stream time; samples of `clip` they account for). A clip that `ends_in_silence`
        (at a cut, or at the end of the audio) keeps all its segments."""
        start = time.perf_counter()
        result = self.stt.transcribe(clip, prompt=self._prompt, word_timestamps=self.word_timestamps)
        self.decode_seconds += time.perf_counter() - start
        self.windows += 1
        self.language = self.language or result.language
        # at a window's end Whisper now and then writes what it did not hear into a fraction of a second: its
        # prompt again, or "No, it's going to be cold." in 0.16 s of hiss
        heard = [s for s in result.segments if said_in_time((s,), s.end - s.start)]
        segments, used = heard, len(clip)
        if ends_in_silence:
            if self._cutter is not None and segments and segments[-1].end < len(clip) / SAMPLE_RATE - UNHEARD_TAIL:
                used = max(int(segments[-1].end * SAMPLE_RATE), int(MIN_ADVANCE * SAMPLE_RATE))  # Whisper stopped early
        else:
            if segments and segments[-1].start >= MIN_ADVANCE:  # hold the last segment back: it may be cut off
                used = int(segments[-1].start * SAMPLE_RATE)
                segments = segments[:-1]
            elif not segments:  # no words: speech may begin at the edge, decode that part again whole
                used = len(clip) - int(SILENT_KEEP * SAMPLE_RATE)
        kept = [piece for s in segments for piece in _split_at_pauses(Segment(
            self._time(s.start + offset), self._time(s.end + offset, end=True), s.text,
            tuple(Word(w.text, self._time(w.start + offset), self._time(w.end + offset, end=True)) for w in s.words)))]
        if kept:
            self._prompt = (self._prompt + " " + " ".join(s.text for s in kept)).strip()[-PROMPT_CHARS:]
        elif not heard:  # a window without words ends the context: an old prompt would be copied
            self._prompt = ""
        return kept, used


def _split_at_pauses(segment: Segment) -> list[Segment]:
    """`segment` cut where its words (if timed) pause for SPLIT_PAUSE or more: Whisper writes one segment
    for several sentences with the silences between them cut out, and a subtitle should not stay on
    screen through the silence."""
    pieces: list[list[Word]] = []
    for word in segment.words:
        if not pieces or word.start - pieces[-1][-1].end >= SPLIT_PAUSE:
            pieces.append([])
        pieces[-1].append(word)
    if len(pieces) < 2:
        return [segment]
    return [Segment(words[0].start, words[-1].end, "".join(w.text for w in words).strip(), tuple(words))
            for words in pieces]

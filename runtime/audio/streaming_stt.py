"""Partial transcripts of one utterance while it is spoken, that never take a word back, and its
final transcript at the end.

    streamer = StreamingTranscriber(stt)
    streamer.add(chunk)                  # as audio arrives (cheap)
    partial = streamer.update()          # in a worker thread, as often as decoding keeps up
    partial.confirmed, partial.tentative
    text = streamer.finish()             # at end of turn
    streamer.reset()                     # next utterance

LocalAgreement-2 (Macháček et al., whisper_streaming): each update decodes the audio buffered so
far; a word is confirmed when two consecutive hypotheses agree on it, i.e. the longest common word
prefix of the last two hypotheses (beyond what is already confirmed), and the older of them heard
`EDGE_SECONDS` of audio after it (words at the very end of a clip are Whisper's guesses). Confirmed
text only grows, so a display of it never flickers; the rest of the newest hypothesis is the
tentative tail.

Whisper decodes a short clip cheaply (the encoder window is fitted to the clip, see
`runtime.audio.fitted_whisper`), so an utterance shorter than `CUT_AFTER_SECONDS` is decoded whole
each time, and its final transcript is a decode of all of it: the same text as transcribing the clip
directly. Cutting confirmed audio away loses the words' context (5 points of WER on the bench's
sentences, 8 on its long utterances: partial decodes of a clip that ends mid-word confirm wrong
words); it is kept for long utterances, where a whole decode grows slow (~1.5 s for 18 s of speech). Then the
audio up to the end of the confirmed words (word timestamps) is dropped from the buffer and the
confirmed text becomes the decoding prompt, so each later decode, and the final one, covers only
the unconfirmed tail. Where a decode's new words begin is found by word times, cut or not: its own
copy of the last confirmed words near where they were heard, or else the words heard after them.

A backend without word timestamps (onnx) still gets stable partials; its buffer is never cut, so
every decode re-reads the whole utterance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from runtime.audio.stt import SAMPLE_RATE, SpeechToText, Transcription, Word, said_in_time

PROMPT_CHARS = 200  # confirmed text passed as the prompt: whisper_streaming's choice, well under Whisper's 224 tokens
CUT_AFTER_SECONDS = 20.0  # a longer buffer drops the audio of its confirmed words before the next decode
MAX_BUFFER_SECONDS = 24.0  # a buffer this long is cut even where no sentence ends and nobody paused
KEPT_WORDS = 2  # confirmed words left in the buffer by that cut: context, since word timestamps are rough
SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")
PAUSE_SECONDS = 0.25  # a gap between two words that makes a clean place to cut
MAX_REPEATED_WORDS = 5  # confirmed words looked for in a decode, to find where its new words begin
SAME_PLACE = 0.5  # seconds two decodes' times for one word may differ (word timestamps are rough)
# A word is confirmed only if the older of the two decodes that agree on it heard this much audio after it:
# a clip that ends inside a word makes Whisper guess there, and two decodes can guess alike (both wrote
# "from London", words said seconds before, for a "has run out" cut short). bench_stt's long utterances,
# pipeline errors against 20 for the whole clips: 31 at 0 s, 27 at 0.3, 24 at 0.5, 21 at 1.0, 20 at 1.5;
# with updates every 0.7 s instead of 0.5, 27 at 0 s and 17 at 1.0. The display loses nothing (the words
# show as tentative meanwhile); only the audio cut away for long utterances waits a second longer.
EDGE_SECONDS = 1.0
# languages written without spaces between words: their text is compared character by character
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "bo", "yue"})


@dataclass(frozen=True)
class Partial:
    confirmed: str  # agreed by two decodes: never changes afterwards
    tentative: str  # the newest decode's words after the confirmed ones: may change
    decode_seconds: float  # time this update spent decoding (0 when there was nothing new)


def _key(word: str) -> str:
    """A word as compared between hypotheses: case and surrounding punctuation do not count."""
    return re.sub(r"[^\w']+", "", word.casefold())


class StreamingTranscriber:
    """One utterance at a time; `add` may be called from the audio thread, `update`/`finish` from one worker
    (they are not synchronised with each other: the caller serialises them)."""

    def __init__(self, stt: SpeechToText, *, language: str = "en") -> None:
        self.stt = stt
        self.language = language
        self.reset()

    def reset(self) -> None:
        """Forget the utterance: a new one starts."""
        self._chunks: list[np.ndarray] = []
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0.0  # seconds of the utterance cut from the front of the buffer
        self._confirmed: list[Word] = []  # times in seconds from the utterance start
        self._previous: list[Word] = []  # the last decode's words after the confirmed ones
        self._previous_end = 0.0  # seconds of the utterance that decode heard
        self._cut_words = 0  # confirmed words whose audio is cut away: the prompt
        self._decoded_samples = -1  # buffer length at the last decode: nothing new, no decode
        self._last: Transcription | None = None  # that decode
        self.decoded_seconds = 0.0  # seconds of audio the last decode covered (update or finish)

    def add(self, samples: np.ndarray) -> None:
        """Append float32 mono 16 kHz audio of the utterance."""
        self._chunks.append(np.asarray(samples, dtype=np.float32).reshape(-1))

    @property
    def confirmed(self) -> str:
        return _text(self._confirmed)

    @property
    def audio(self) -> np.ndarray:
        """The utterance's audio not yet cut away: what the next decode reads (all of it for a short one)."""
        self._take_chunks()
        return self._buffer

    @property
    def buffered_seconds(self) -> float:
        """Audio not yet cut away: what the next decode will read."""
        return (len(self._buffer) + sum(len(c) for c in self._chunks)) / SAMPLE_RATE

    def update(self) -> Partial:
        """Decode the buffer now (blocking) and confirm the words the last two decodes agree on."""
        self._take_chunks()
        if len(self._buffer) == self._decoded_samples:
            return Partial(self.confirmed, _text(self._previous), 0.0)
        result = self._decode()
        words = self._new_words(result)
        agreed, heard_after = 0, self._previous_end - EDGE_SECONDS
        while (agreed < min(len(words), len(self._previous))
               and _key(words[agreed].text) == _key(self._previous[agreed].text)
               and self._previous[agreed].end <= heard_after):
            agreed += 1
        self._confirmed += words[:agreed]
        self._previous = words[agreed:]
        self._previous_end = self._offset + len(self._buffer) / SAMPLE_RATE
        if agreed and result.words and len(self._buffer) > CUT_AFTER_SECONDS * SAMPLE_RATE:
            self._cut()
        return Partial(self.confirmed, _text(self._previous), result.decode_seconds)

    def finish(self) -> str:
        """The utterance's whole text: a decode of all of it, or, once audio was cut away, the confirmed
        words plus a decode of the unconfirmed tail."""
        self._take_chunks()
        if not len(self._buffer):
            return self.confirmed
        result = self._last  # the last update's decode, when no audio came after it
        if result is None or len(self._buffer) != self._decoded_samples:
            # nothing cut: only the text is wanted, and word times cost ~13% of a decode (40 ms of 0.3 s)
            result = self._decode(word_timestamps=bool(self._offset))
        if not self._offset:  # nothing cut: this decode heard the whole utterance
            return result.text
        return _text(self._confirmed + self._new_words(result))

    # --- internals ---------------------------------------------------------------------------

    def _take_chunks(self) -> None:
        if self._chunks:
            self._buffer = np.concatenate([self._buffer, *self._chunks])
            self._chunks = []

    def _decode(self, *, word_timestamps: bool = True) -> Transcription:
        """A decode of the buffer with the confirmed text as the prompt. Whisper sometimes answers a
        short or quiet clip by repeating its prompt, or by a loop ("and up, and up, ..." for 130 words:
        a cut-in whose first syllables AEC3 had suppressed during double talk, in bench_voice 2 of 10):
        more words than anyone says in that time. Then the clip is decoded again without the prompt
        (when it had one), and if that is no better it has no words: the turn is dropped rather than
        answered as nonsense."""
        self._decoded_samples = len(self._buffer)
        self.decoded_seconds = len(self._buffer) / SAMPLE_RATE
        prompt = _text(self._confirmed[:self._cut_words])[-PROMPT_CHARS:]
        result = self.stt.transcribe(self._buffer, prompt=prompt, word_timestamps=word_timestamps)
        if not said_in_time(result.segments, self.decoded_seconds):
            retry = self.stt.transcribe(self._buffer, word_timestamps=word_timestamps) if prompt else result
            spent = result.decode_seconds + (retry.decode_seconds if prompt else 0.0)
            result = retry if said_in_time(retry.segments, self.decoded_seconds) else Transcription(
                "", (), result.language, result.duration, spent)
        self._last = result
        return result

    def _new_words(self, result: Transcription) -> list[Word]:
        """The decode's words in utterance time after the confirmed ones.

        With word times, found by where the decode says the confirmed words end: its own copy of the last
        confirmed words near that time (a decode after a cut repeats the words left in the buffer), or else
        the words heard after it. Counting words instead fails as soon as a decode merges or splits a word
        the last one did not (a repeated "Spanish. Spanish." or a lost "How" at the next word, on the
        long utterances of bench_stt)."""
        if not result.words:  # no word times (onnx): the words after as many as are confirmed
            words = [Word(w, 0.0, 0.0) for s in result.segments for w in self._split(s.text)]
            return words[len(self._confirmed):]
        words = [Word(w.text, w.start + self._offset, w.end + self._offset) for w in result.words]
        if not self._confirmed:
            return words
        end = self._confirmed[-1].end
        for n in range(min(MAX_REPEATED_WORDS, len(self._confirmed)), 0, -1):
            tail = [_key(w.text) for w in self._confirmed[-n:]]
            for i in range(len(words) - n + 1):
                if abs(words[i + n - 1].end - end) <= SAME_PLACE and [_key(w.text) for w in words[i:i + n]] == tail:
                    return words[i + n:]
        return [w for w in words if (w.start + w.end) / 2 >= end]

    def _split(self, text: str) -> list[str]:
        if self.language in UNSPACED_LANGUAGES:
            return [c for c in text if not c.isspace()]
        return [" " + w for w in text.split()]

    def _cut(self) -> None:
        """Drop the buffered audio of the confirmed words up to the last sentence end or pause among them, so
        the next decode starts on a clean boundary; past MAX_BUFFER_SECONDS without one, of all but the last
        KEPT_WORDS (context, and a word boundary to align on). The words cut away become the prompt."""
        words = self._confirmed
        cut_words = next((i + 1 for i in range(len(words) - 2, self._cut_words - 1, -1)
                          if _boundary(words[i], words[i + 1])), 0)
        if not cut_words and len(self._buffer) > MAX_BUFFER_SECONDS * SAMPLE_RATE:
            cut_words = len(words) - KEPT_WORDS
        if cut_words <= self._cut_words:
            return
        cut = (words[cut_words - 1].end + words[cut_words].start) / 2
        samples = min(int(round((cut - self._offset) * SAMPLE_RATE)), len(self._buffer))
        if samples <= 0:
            return
        self._buffer = self._buffer[samples:]
        self._offset += samples / SAMPLE_RATE
        self._cut_words = cut_words
        self._decoded_samples = -1  # the buffer changed: the next update decodes even without new audio


def _boundary(word: Word, following: Word) -> bool:
    """A sentence ends after `word`, or the speaker paused before `following`."""
    return word.text.rstrip().endswith(SENTENCE_ENDS) or following.start - word.end >= PAUSE_SECONDS


def _text(words: list[Word]) -> str:
    """Words joined as the model wrote them (each carries its own leading space, or none in unspaced scripts)."""
    return "".join(w.text for w in words).strip()

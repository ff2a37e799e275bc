"""Telling "stop" from a question: an utterance that only asks the assistant to stop gets no answer.

    stop = StopPhrases(["stop", "wait", "that's enough"], fillers=["please", "okay"])
    stop.asked_by("Wait, stop please.")       # True
    stop.asked_by("Wait, what about the moon?")  # False: there is something to answer

A user who cuts in with "Stop, please." wants silence; answering it (a small model repeats the reply it
was cut off in, or says "Okay! Is there anything else?") talks over the very thing they asked for. An
utterance asks to stop when it is made only of stop phrases and filler words, with at least one stop
phrase: "Okay, thanks, that's enough." does, "Thank you." alone (no stop phrase) and "Hold on, what did you
say about Paris?" (words left over) do not. A cut-in's first words, heard under the assistant's voice, may be
Whisper's guess at the echo; `unsure_lead` lets a few of them pass. Both lists are settings
(`voice.stop_phrases`, `voice.stop_fillers`): the defaults are English, another language lists its own.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from runtime.audio.turn import WORD


def words_of(text: str) -> tuple[str, ...]:
    """Lower-case words without punctuation; curly apostrophes (Whisper writes both) made straight."""
    return tuple(WORD.findall(text.lower().replace("’", "'")))


def said_after(before: str, whole: str) -> str:
    """What `whole` says after `before`, as written in `whole`: the words a user went on to say after a turn
    that was transcribed as `before` ("Tell me a story.", "Tell me a story. Stop, please." -> "Stop, please.").
    Whisper transcribes the audio of both again and may write the first part a little differently ("2." becomes
    "2,", "Zadragon" "a dragon", "color" "colour"), so `before` ends after the word of `whole` where the letters
    so far are fewest edits from its letters (the earliest such word)."""
    tokens = whole.split()
    keys = ["".join(words_of(token)) for token in tokens]
    letters = np.array([ord(c) for c in "".join(keys)], dtype=np.int64)
    at = np.arange(letters.size + 1)
    row = at  # edits from the letters of `before` so far to each prefix of `whole`'s letters
    for letter in "".join(words_of(before)):
        kept = np.concatenate([[row[0] + 1], np.minimum(row[1:] + 1, row[:-1] + (letters != ord(letter)))])
        row = np.minimum.accumulate(kept - at) + at  # then the cheapest run of letters of `whole` skipped
    ends = np.cumsum([0, *map(len, keys)])  # letters before each word's end
    end = int(np.argmin(row[ends]))
    return " ".join(tokens[end:])


class StopPhrases:
    def __init__(self, phrases: Iterable[str], fillers: Iterable[str] = ()) -> None:
        self.phrases = frozenset(w for w in map(words_of, phrases) if w)
        self.fillers = frozenset(w for w in map(words_of, fillers) if w) - self.phrases
        self._longest = max((len(p) for p in self.phrases | self.fillers), default=0)

    def asked_by(self, text: str, *, unsure_lead: int = 0) -> bool:
        """True when `text` is stop phrases and fillers only, at least one of them a stop phrase. With
        `unsure_lead` > 0, also when up to that many words come before a stop request of two words or more and
        it is not a question: the start of a cut-in is heard under the echo's last sound, and Whisper writes
        what it makes of it ("Stop, please stop." -> "I got to stop. Please stop.", "Wait, stop please." ->
        "Wait, it stop please." in bench_voice). A one-word request is never enough there: "Please don't stop"."""
        words = words_of(text)
        if not words or not self.phrases:
            return False
        if self._is_stop_only(words):
            return True
        if text.rstrip().endswith("?"):
            return False
        return any(self._is_stop_only(words[lead:]) for lead in range(1, min(unsure_lead, len(words) - 2) + 1))

    def _is_stop_only(self, words: tuple[str, ...]) -> bool:
        # reach[i]: 0 if words[:i] cannot be split into listed phrases, 1 if only into fillers, 2 with a stop phrase
        reach = [1] + [0] * len(words)
        for end in range(1, len(words) + 1):
            for start in range(max(0, end - self._longest), end):
                piece = words[start:end]
                if reach[start] and piece in self.phrases:
                    reach[end] = 2
                elif reach[start] and piece in self.fillers:
                    reach[end] = max(reach[end], reach[start])
        return reach[-1] == 2

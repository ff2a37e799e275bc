"""End of turn: how long a silence must last before the user is done, from the words and (optionally) a model.

    policy = TurnPolicy(pause=0.35, wait=1.2)
    policy.silence_needed("What time is it?")          # 0.35: a finished question
    policy.silence_needed("I'd like to book a flight and")  # 1.2: a trailing "and"

Silence alone cuts people off mid-thought ("I want to... um... go to Paris"). The partial transcript
says more: a sentence that ends in a full stop or question mark is likely finished, one that ends in
a conjunction, a filler or a comma is not. Whisper punctuates its output, which this leans on. When
the user points `voice.turn_model` at an end-of-turn ONNX model in the Smart Turn format (the last
8 s of 16 kHz audio as an 80 x 800 Whisper log-mel -> probability that the turn is complete), its
verdict on the audio decides instead of the words, and the two silences stay the bounds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ai.errors import EdgeAIError

# Words after which an English speaker is not done, even when Whisper ends the fragment with a question
# mark: conjunctions, fillers, articles, possessives.
NEVER_LAST = frozenset("""
and or but so because since although though while if whereas unless until then also plus than between
um uh erm er ah hmm
the a an my your our their every
""".split())
# Words that end a fragment more often than a sentence, but can end a question ("Where are you from?",
# "Do you know what it is?"): prepositions, pronouns, auxiliaries, the start of a clause.
RARELY_LAST = frozenset("""
when like well mean
this that these those some any his her its
to of in on at for with from by about into over under through as
is are was were be been am do does did have has had will would can could should might must
i we you they he she it what which who where how why
""".split())

# a word: any script's letters and digits ("2 plus 2?" ends in "2", not "plus"); "that's" stays one word
WORD = re.compile(r"[\w']+")


def looks_finished(text: str) -> bool | None:
    """True: a finished sentence or question; False: clearly unfinished; None: cannot tell."""
    text = text.strip()
    if not text:
        return None
    if text.endswith(("...", "…", ",", ";", ":", "-", "—")):
        return False
    words = WORD.findall(text.lower())
    if words and (words[-1] in NEVER_LAST or words[-1] in RARELY_LAST and not text.endswith(("?", "!"))):
        return False
    if text.endswith(("?", "!", ".")):
        return True
    return None


@dataclass(frozen=True)
class TurnPolicy:
    pause: float = 0.35  # silence that ends a finished sentence or question
    wait: float = 1.2  # silence that ends a clearly unfinished one
    model: SmartTurnModel | None = None  # an end-of-turn model: its verdict on the audio replaces the words'

    def __post_init__(self) -> None:
        if not 0 < self.pause <= self.wait:
            raise EdgeAIError(f"voice.turn_pause ({self.pause}) must be positive and at most voice.turn_wait "
                              f"({self.wait})")

    def silence_needed(self, text: str, audio: np.ndarray | None = None) -> float:
        """Seconds of silence after which the turn that produced `text` (and `audio`) is over."""
        if self.model is not None and audio is not None and audio.size:
            return self.pause if self.model.complete(audio) else self.wait
        finished = looks_finished(text)
        if finished is None:
            return (self.pause + self.wait) / 2
        return self.pause if finished else self.wait


class SmartTurnModel:
    """An end-of-turn classifier in the Smart Turn (v2/v3) ONNX format, run on the end of the utterance."""

    SECONDS = 8  # the model looks at the last 8 s, zero-padded at the front when shorter
    FRAMES = 800  # mel frames in 8 s at Whisper's 10 ms hop

    def __init__(self, path: Path, threshold: float = 0.5) -> None:
        from runtime.onnx_session import open_session

        if not path.is_file():
            raise EdgeAIError(f"end-of-turn model {path} does not exist; fix voice.turn_model or set it to ''")
        self._session = open_session(path, threads=1)
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        shape = inputs.get("input_features")
        if shape is None or len(shape) != 3 or shape[1] != 80:
            raise EdgeAIError(f"{path} is not a Smart Turn model: it needs an 'input_features' input of shape "
                              f"[batch, 80, 800], it has {inputs}")
        self.threshold = threshold

    def probability(self, audio: np.ndarray) -> float:
        """Probability that the speaker has finished, from the last 8 s of 16 kHz mono float audio."""
        from runtime.audio.mel import log_mel_spectrogram

        n = self.SECONDS * 16_000
        clip = audio[-n:].astype(np.float32)
        clip = (clip - clip.mean()) / np.sqrt(clip.var() + 1e-7)  # the feature extractor's do_normalize
        clip = np.pad(clip, (n - clip.size, 0))
        features = log_mel_spectrogram(clip)[:, : self.FRAMES][None].astype(np.float32)
        (out,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(out).reshape(-1)[0])

    def complete(self, audio: np.ndarray) -> bool:
        return self.probability(audio) >= self.threshold

"""What the voice pipeline tells its user interface: typed events, each stamped with `time.monotonic()`.

System-like events (state changes, status) are never dropped; everything a turn produces carries the
turn number, so a user interface can ignore what an interruption made stale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum


class VoiceState(Enum):
    LISTENING = "listening"
    USER_SPEAKING = "user speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"


def _now() -> float:
    return time.monotonic()


@dataclass(frozen=True)
class StateChanged:
    state: VoiceState
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class Level:
    """Microphone level after echo cancellation, for a meter (dBFS, -100 = silence)."""

    db: float
    speech: float  # the VAD's speech probability of the last frame
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class Partial:
    """The user's words so far: `confirmed` never changes any more, `tentative` may."""

    turn: int
    confirmed: str
    tentative: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class UserTurn:
    """The user finished speaking: what they said."""

    turn: int
    text: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class StopAsked:
    """The user finished speaking and only asked the assistant to stop ("Wait, stop please."): no answer
    follows, and the history is left as it was (the reply it cut off keeps what was heard of it)."""

    turn: int
    text: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class ReplyText:
    """The assistant's reply so far (generated; not all of it spoken yet). Only for a turn the user has
    finished (after its UserTurn): a reply started early at a pause stays unseen until then, and one
    dropped because the user went on is never seen."""

    turn: int
    text: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class Spoken:
    """Text the listener has now heard in full (one chunk of speech finished playing)."""

    turn: int
    text: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class Interrupted:
    """The user cut in: the reply stopped; `heard` is what the listener heard, and what history keeps."""

    turn: int
    heard: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class TurnReopened:
    """The user had spoken again within a pause of turn `turn`'s end, before they could hear its reply: they were
    not done. That turn (shown as `text`) and its reply are taken back, the history keeps neither; the next event
    is the `UserTurn` of the whole utterance, the words before and after the pause. (If the words after it only
    asked to stop, the turn stands instead: an `Interrupted` for it, then the `StopAsked`.)"""

    turn: int
    text: str
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class TurnLatency:
    """Seconds from the end of the user's speech to each stage of the reply."""

    turn: int
    transcript: float  # final transcript ready
    first_token: float  # the LLM's first reply token
    first_audio: float  # the first reply audio leaving the speaker
    at: float = field(default_factory=_now)


@dataclass(frozen=True)
class Status:
    """Something the user should know (a device lost and reopened, a mode chosen)."""

    message: str
    at: float = field(default_factory=_now)


VoiceEvent = (StateChanged | Level | Partial | UserTurn | StopAsked | ReplyText | Spoken | Interrupted | TurnReopened
              | TurnLatency | Status)

"""Cutting in on the assistant in a closed loop of made-up rooms, offline; prints JSON.

The speaker's echo is computed from what the assistant really plays: its reply, delayed by the loop, filtered
and scaled as tests/audio/test_echo_guard's loop is, through a room response (tests/audio/room_acoustics.py),
block by block. `Hearing` holds the reply at a cut-in's onset (the speaker falls silent, while what it played
in the loop's delay still arrives), resumes it at a false start and stops it at a confirmed start, as the
assistant does; the user is an espeak-ng phrase mixed in at `--levels` dB relative to the echo. Per room
(RT60 seconds / direct-to-reverberant dB) and level, over cut-ins placed through the reply:

- hold_s / start_s: p50 seconds from the user's onset to the hold and to the confirmed start; late: starts
  after 0.5 s; missed: never started; false_starts before the start; played_s: p50 / max seconds of the
  reply played after the onset (the assistant talking over the user);
- wer: Whisper's word errors on what the pipeline would transcribe for the cut-in (the speech it hands on
  from the first start near the onset, as the assistant does), against the phrases said; with the echo
  still on its way at the hold left in (`as_heard`: `EchoGuard.without_held_echo` not applied); and on the
  phrases alone at the level they reach the microphone (`clean`: what Whisper does without the assistant's
  voice; it hears some espeak phrases differently at another level);
- holds_alone: holds and starts on the reply with no one cutting in (target 0).

Unlike the live loop (bench_voice) it is repeatable, and the loop's delay can be set (`--delay`): a busy
sound server or a Bluetooth speaker has 0.2-0.3 s.

    python benchmarks/bench_cut_in.py [--rooms 0/99,0.3/10,0.5/5] [--levels 0,-6] [--cut-ins 10] [--delay 0.07]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "audio"))

from room_acoustics import room_response  # noqa: E402

from convert.onnx.speech import speak, word_errors  # noqa: E402
from runtime.audio.hearing import FalseStart, Hearing, SpeechFrame, SpeechOnset  # noqa: E402
from runtime.audio.vad import SpeechStarted  # noqa: E402

RATE = 16_000
BLOCK = 320  # samples (20 ms), as the duplex stream hands them on
REPLY = (("I am the assistant, and this long sentence is my own voice coming back from the speaker. It must never "
          "sound like the user cutting in, whatever the echo canceller is doing.", "en-gb"),
         ("The weather tomorrow will be sunny with a light breeze from the west, and the evening should be calm.",
          "en-us"))
CUT_INS = (("Wait, stop please.", "en-us"), ("Hold on a second.", "en-gb"), ("Sorry, let me interrupt.", "en-us+f3"),
           ("Stop, that is enough.", "en-us"), ("Wait, wait, I have another question for you.", "en-us+m3"))
LATE = 0.5  # seconds from the onset to the start


def echo_path(rt60: float, drr_db: float, delay: float) -> np.ndarray:
    """The loop's impulse response: delayed, 6 dB down, low-passed, then the room (none at RT60 0)."""
    response = 0.5 * np.array([0.6, 0.3, 0.1])
    if rt60 > 0:
        response = np.convolve(response, room_response(rt60, drr_db))
    return np.concatenate([np.zeros(round(delay * RATE)), response])


class ClosedLoop:
    """The assistant playing `reply` into `path` while `Hearing` listens, the user's voice mixed in; the
    speaker held, resumed and stopped by what the hearing reports."""

    def __init__(self, reply: np.ndarray, path: np.ndarray, cut_in_at: float = float("inf"),
                 subtract_held_echo: bool = True) -> None:
        self.reply, self.path, self.cut_in_at = reply, path, cut_in_at
        self.events: list[tuple[float, str]] = []  # (stream seconds, event name)
        self.heard: list[np.ndarray] = []  # the speech handed on from the first start near `cut_in_at`
        self.played_after = 0  # samples of the reply played from `cut_in_at` on
        self.user = np.zeros(0, dtype=np.float32)  # the user's phrase as it reached the microphone
        self._position, self._held, self._stopped, self._now = 0, False, False, 0.0
        self.hearing = Hearing("full", self._on_hear, assistant_speaking=self._speaking)
        if not subtract_held_echo:
            self.hearing._guard.without_held_echo = lambda raw, behind: raw  # the echo left in, for comparison

    def _speaking(self) -> bool:
        return not self._stopped and self._position < self.reply.size

    def _on_hear(self, event: object) -> None:
        if isinstance(event, SpeechOnset):
            self._held = True
        elif isinstance(event, FalseStart):
            self._held = False
        elif isinstance(event, SpeechStarted):
            self._stopped = self._stopped or self._speaking()  # a barge-in: the reply is over
            if event.start >= self.cut_in_at - 0.3:  # (and after a pause in the phrase)
                self.heard.append(event.audio[event.repeated:])
        elif isinstance(event, SpeechFrame) and self.heard:
            self.heard.append(event.samples)
        if isinstance(event, (SpeechOnset, FalseStart, SpeechStarted)):
            self.events.append((self._now, type(event).__name__))

    def run(self, user: np.ndarray, seconds: float) -> None:
        """`seconds` of the loop, `user` (the user's voice at the microphone, from 0) mixed in."""
        state = np.zeros(self.path.size - 1)
        user = np.pad(user, (0, max(0, round(seconds * RATE) - user.size)))
        for start in range(0, round(seconds * RATE) - BLOCK + 1, BLOCK):
            self._now = (start + BLOCK) / RATE
            speaker = np.zeros(BLOCK)
            if not (self._held or self._stopped) and self._position < self.reply.size:
                piece = self.reply[self._position:self._position + BLOCK]
                speaker[:piece.size] = piece
                self._position += BLOCK
                self.played_after += BLOCK if start / RATE >= self.cut_in_at else 0
            echo, state = lfilter(self.path, [1.0], speaker, zi=state)
            mic = echo + user[start:start + BLOCK]
            self.hearing.on_audio(mic.astype(np.float32), speaker.astype(np.float32))


def cut_in(reply: np.ndarray, path: np.ndarray, phrase: np.ndarray, at: float, level_db: float,
           subtract_held_echo: bool = True) -> ClosedLoop:
    """The reply cut in on at `at` seconds by `phrase`, `level_db` relative to the echo over its span."""
    onset = round(at * RATE)
    echo = lfilter(path, [1.0], reply)[onset:onset + phrase.size]
    gain = np.sqrt(np.mean(np.square(echo)) / np.mean(np.square(phrase))) * 10 ** (level_db / 20)
    user = np.zeros(onset + phrase.size)
    user[onset:] = gain * phrase
    loop = ClosedLoop(reply, path, at, subtract_held_echo)
    loop.run(user, at + phrase.size / RATE + 1.2)
    loop.user = (gain * phrase).astype(np.float32)
    return loop


def timing(loops: list[ClosedLoop]) -> dict[str, object]:
    holds, starts, false_starts, played = [], [], 0, []
    for loop in loops:
        after = [(t - loop.cut_in_at, name) for t, name in loop.events if t >= loop.cut_in_at]
        start = next((t for t, name in after if name == "SpeechStarted"), None)
        holds.append(next((t for t, name in after if name in ("SpeechOnset", "SpeechStarted")), None))
        starts.append(start)
        false_starts += sum(1 for t, name in after if name == "FalseStart" and (start is None or t < start))
        played.append(loop.played_after / RATE)

    def p50(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(statistics.median(known), 3) if known else None

    return {"hold_s": p50(holds), "start_s": p50(starts), "late": sum(s is not None and s > LATE for s in starts),
            "missed": sum(s is None for s in starts), "false_starts": false_starts,
            "played_s": [p50(played), round(max(played), 3)]}


def wer(loops: list[ClosedLoop], said: list[str], transcribe: Callable[[np.ndarray], str],
        clean: bool = False) -> float:
    """Word errors on what each loop handed on, or (`clean`) on the user's phrase alone as it reached the
    microphone."""
    errors = words = 0
    for loop, text in zip(loops, said):
        heard = np.concatenate(loop.heard) if loop.heard else np.zeros(0, dtype=np.float32)
        if clean:
            heard = loop.user
        wrong, count = word_errors(text, transcribe(heard) if heard.size else "")
        errors, words = errors + wrong, words + count
    return round(errors / max(words, 1), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", default="0/99,0.3/10,0.5/5", help="RT60/DRR pairs (RT60 0: no room)")
    parser.add_argument("--levels", default="0,-6", help="the user's level relative to the echo, dB")
    parser.add_argument("--cut-ins", type=int, default=10, help="cut-ins per room and level, spread over the reply")
    parser.add_argument("--delay", type=float, default=0.07, help="the loop's delay, seconds")
    parser.add_argument("--no-wer", action="store_true", help="timing only (no Whisper)")
    args = parser.parse_args()
    rooms = [tuple(map(float, room.split("/"))) for room in args.rooms.split(",")]
    levels = [float(level) for level in args.levels.split(",")]
    reply = np.concatenate([np.zeros(RATE // 4, dtype=np.float32), *(speak(text, voice) for text, voice in REPLY)])
    phrases = [speak(text, voice) for text, voice in CUT_INS]
    transcribe = None
    if not args.no_wer:
        from edge_ai.config import Config
        from runtime.audio.stt import open_stt

        stt = open_stt(Config())  # the conversation's model and decode options
        transcribe = lambda samples: stt.transcribe(samples).text  # noqa: E731
    places = [float(at) for at in np.linspace(1.5, reply.size / RATE - 3.0, args.cut_ins)]
    said = [CUT_INS[i % len(CUT_INS)][0] for i in range(args.cut_ins)]
    result: dict[str, object] = {"delay_s": args.delay, "cut_ins": args.cut_ins, "rooms": {}}
    for rt60, drr in rooms:
        path = echo_path(rt60, drr, args.delay)
        alone = ClosedLoop(reply, path)
        alone.run(np.zeros(0), reply.size / RATE + 1.0)
        room: dict[str, object] = {"holds_alone": sum(name == "SpeechOnset" for _, name in alone.events),
                                   "starts_alone": sum(name == "SpeechStarted" for _, name in alone.events)}
        for level in levels:
            loops = [cut_in(reply, path, phrases[i % len(phrases)], at, level) for i, at in enumerate(places)]
            figures = timing(loops)
            if transcribe is not None:
                as_heard = [cut_in(reply, path, phrases[i % len(phrases)], at, level, subtract_held_echo=False)
                            for i, at in enumerate(places)]
                figures["wer"] = wer(loops, said, transcribe)
                figures["wer_as_heard"] = wer(as_heard, said, transcribe)
                figures["wer_clean"] = wer(loops, said, transcribe, clean=True)
            room[f"{level:+g}dB"] = figures
        result["rooms"][f"{rt60:g}/{drr:g}"] = room
        print(json.dumps({f"{rt60:g}/{drr:g}": room}), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

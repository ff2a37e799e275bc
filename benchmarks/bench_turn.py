"""False cut-offs: sentences with a pause in the middle, spoken into the PulseAudio room; prints JSON.

    python benchmarks/bench_turn.py [--pauses 0.5 0.8] [--sentences 12]

Each sentence is said in two halves by espeak-ng with a silence between them, at a place where
people stop to think ("Set an alarm for ... seven thirty in the morning."). The voice pipeline
listens (`edge-ai listen`'s mode: transcripts, no replies) on the room of `bench_voice.py`, and a
sentence counts as cut off when it ends up as more than one user turn. Two end-of-turn policies
are compared on the same audio: silence alone (`voice.turn_wait` equal to `voice.turn_pause`) and
the default, which waits longer after words that leave a sentence unfinished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "audio"))

from bench_voice import build_room, tear_down  # noqa: E402
from pulse import play_into  # noqa: E402

RATE = 16_000
PAUSED = (  # (before the pause, after it)
    ("Can you tell me", "what the weather will be like tomorrow?"),
    ("I need to buy milk, eggs and", "some bread for the weekend."),
    ("Set an alarm for", "seven thirty in the morning."),
    ("What is the difference between", "a virus and a bacterium?"),
    ("Remind me to call", "my mother on Sunday."),
    ("How long does it take to drive from", "Berlin to Munich?"),
    ("Tell me a joke about", "cats and dogs."),
    ("Translate the word", "house into Spanish."),
    ("I was wondering if you could", "help me plan a trip to the coast."),
    ("Play some music by", "the Beatles, please."),
    ("The meeting is on Monday, so", "please book a room for six people."),
    ("Um, what time does", "the next train to Leeds leave?"),
)


def run(policy: str, pauses: list[float], sentences: int, tmp: Path) -> dict[str, object]:
    from convert.onnx.speech import speak
    from edge_ai.config import Config
    from runtime.audio import events as ev
    from runtime.audio.session import VoiceSession

    values: dict[str, object] = {"voice.mode": "full"}
    if policy == "silence only":
        values["voice.turn_wait"] = Config().voice.turn_pause
    cfg = Config().with_values(values)
    turns: list[object] = []
    lock = threading.Lock()
    state = [ev.VoiceState.LISTENING, 0.0]  # the pipeline's state and when it last changed

    def on_event(event: object) -> None:
        with lock:
            if isinstance(event, ev.UserTurn):
                turns.append(event)
            elif isinstance(event, ev.StateChanged):
                state[:] = [event.state, time.monotonic()]

    session = VoiceSession.open(cfg, None, on_event, reply=False)
    session.start()
    results = []
    try:
        time.sleep(1.0)
        for i in range(sentences):
            before, after = PAUSED[i % len(PAUSED)]
            pause = pauses[i % len(pauses)]
            clip = np.concatenate([speak(before), np.zeros(int(pause * RATE), dtype=np.float32), speak(after)])
            with lock:
                mark = len(turns)
            play_into("vsink", clip, tmp / f"s{i}.wav")
            played = time.monotonic()
            while time.monotonic() - played < 20:  # until the pipeline has listened quietly for a while
                time.sleep(0.1)
                with lock:
                    if state[0] is ev.VoiceState.LISTENING and time.monotonic() - max(played, state[1]) > 2.0:
                        break
            with lock:
                heard = [t.text for t in turns[mark:]]
            results.append({"sentence": f"{before} ... {after}", "pause": pause, "turns": heard})
    finally:
        session.close()
    cut = [r for r in results if len(r["turns"]) > 1]
    return {"sentences": len(results), "cut_off": len(cut),
            "cut_off_by_pause": {str(p): sum(1 for r in cut if r["pause"] == p) for p in pauses},
            "missed": sum(1 for r in results if not r["turns"]), "cut_sentences": [r["turns"] for r in cut]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pauses", type=float, nargs="+", default=[0.5, 0.8], help="seconds of the mid-sentence pause")
    parser.add_argument("--sentences", type=int, default=len(PAUSED), help="sentences per policy")
    args = parser.parse_args()
    room = build_room()
    os.environ["PULSE_SINK"], os.environ["PULSE_SOURCE"] = "asink", "vsink.monitor"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-turn-") as tmp:
            report = {policy: run(policy, args.pauses, args.sentences, Path(tmp))
                      for policy in ("silence only", "words")}
    finally:
        tear_down(room)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""The assistant's own voice vs the user's, on a real PulseAudio loop; prints JSON.

The assistant's voice is played through one duplex stream into a null sink whose monitor is the
microphone (GUIDE §6), and the raw microphone and the speaker reference are recorded in step. The
recording is then replayed block by block through `Hearing` in full duplex, each time with a fresh
echo canceller (the first reply of a session, before AEC3 has found the delay):

- self_starts: speech starts the VAD reports from echo alone (target 0), with and without the
  `EchoGuard`, on the recording as played and with the loop's delay jumping by `--jump-ms` halfway
  through (an underrun, a device switch);
- echo_share: the guard's score on echo alone and with a user's voice mixed in at 0, -6 and -10 dB
  relative to the echo (the null sink's loop is linear, so mixing equals both playing at once);
- barge_in: seconds from the onset of the user's voice mixed over the reply at those levels to the
  speech start the VAD reports (null: never heard; AEC3 suppresses the user during double talk),
  with and without the guard.

    python benchmarks/bench_echo.py [--replies 5] [--jump-ms 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "audio"))

from pulse import NullSink, ensure_pulse  # noqa: E402

from convert.onnx.speech import speak  # noqa: E402
from runtime.audio.devices import pick_device  # noqa: E402
from runtime.audio.duplex import DuplexStream, Player  # noqa: E402
from runtime.audio.echo_guard import ECHO_RATIO, NEAR_END_RATIO, EchoGuard  # noqa: E402
from runtime.audio.hearing import Hearing  # noqa: E402
from runtime.audio.vad import SpeechStarted, VadOptions  # noqa: E402

RATE = 16_000
BLOCK = 320  # the duplex stream's 20 ms blocks
REPLIES = (
    ("Hello! I am your assistant, and I am speaking through the speaker right now.", "en-us"),
    ("The microphone hears every word I say, but I must never interrupt myself.", "en-gb"),
    ("Echo cancellation is what keeps me from hearing my own voice as yours.", "en-us+f3"),
    ("Paris is the capital of France, and it sits on the river Seine.", "en-gb-x-rp"),
    ("A spider has eight legs, while an insect such as a bee has six.", "en-us+m3"),
)
USER = ("Stop, wait a moment please.", "en-gb-scotland")
USER_AT = 2.0  # seconds into the reply at which the user cuts in
LEVELS_DB = (0, -6, -10)
KEYS = {False: "aec_only", True: "guard"}


def record_loop(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Play `samples` through the default speaker while recording the raw microphone and the reference."""
    mic, ref, lock = [], [], threading.Lock()

    def on_audio(m: np.ndarray, r: np.ndarray) -> None:
        with lock:
            mic.append(m.copy())
            ref.append(r.copy())

    player, done = Player(), threading.Event()
    stream = DuplexStream(pick_device("", "input"), pick_device("", "output"), player, on_audio)
    stream.start()
    try:
        time.sleep(0.3)
        player.play(samples, RATE, on_done=lambda item: done.set())
        done.wait(samples.size / RATE + 10)
        time.sleep(0.6)
    finally:
        stream.close()
    with lock:
        return np.concatenate(mic), np.concatenate(ref)


def replay(mic: np.ndarray, ref: np.ndarray, guard: bool) -> list[float]:
    """Stream seconds of every speech start `Hearing` reports on this recording (full duplex, fresh AEC)."""
    starts: list[float] = []
    hearing = Hearing("full", lambda e: starts.append(e.start) if isinstance(e, SpeechStarted) else None,
                      assistant_speaking=lambda: True, echo_guard=guard)
    for i in range(0, min(mic.size, ref.size) - BLOCK + 1, BLOCK):
        hearing.on_audio(mic[i:i + BLOCK], ref[i:i + BLOCK])
    return starts


def jumped(mic: np.ndarray, jump_ms: int) -> np.ndarray:
    """The microphone with the loop's delay growing by `jump_ms` halfway through (silence inserted)."""
    half, gap = mic.size // 2, round(jump_ms * RATE / 1000)
    return np.concatenate([mic[:half], np.zeros(gap, dtype=np.float32), mic[half:]])[: mic.size]


def shares(mic: np.ndarray, ref: np.ndarray, start: int, end: int) -> list[float]:
    """The guard's score every 32 ms between samples `start` and `end` where the microphone is not silent."""
    guard, out = EchoGuard(VadOptions()), []
    for i in range(0, end - BLOCK + 1, BLOCK):
        guard.push(mic[i:i + BLOCK], ref[i:i + BLOCK])
        if i >= start and i % 512 < BLOCK and np.sqrt(np.mean(np.square(mic[i:i + BLOCK]))) > 0.01:
            out.append(guard.echo_share())
    return out


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "p05": round(ordered[len(ordered) // 20], 3),
            "p50": round(statistics.median(values), 3), "p95": round(ordered[len(ordered) * 19 // 20], 3)}


def totals(replies: list[dict]) -> dict:
    """Per variant: self-started speech summed over replies, and barge-ins heard (count, median delay)."""
    out: dict = {}
    for key in KEYS.values():
        row: dict = {"self_starts": sum(r[f"self_starts_{key}"] for r in replies),
                     "self_starts_after_jump": sum(r[f"self_starts_after_jump_{key}"] for r in replies)}
        for level in LEVELS_DB:
            heard = [r[f"barge_in_{level}dB_{key}_s"] for r in replies if r[f"barge_in_{level}dB_{key}_s"] is not None]
            row[f"barge_in_{level}dB_heard"] = f"{len(heard)}/{len(replies)}"
            row[f"barge_in_{level}dB_p50_s"] = round(statistics.median(heard), 3) if heard else None
        out[key] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=5, help=f"replies to play (up to {len(REPLIES)})")
    parser.add_argument("--jump-ms", type=int, default=200, help="the simulated jump of the loop's delay")
    args = parser.parse_args()
    ensure_pulse()
    sink = NullSink("vsink")
    sink.make_default()
    user = speak(*USER)
    result: dict = {"echo_ratio": ECHO_RATIO, "near_end_ratio": NEAR_END_RATIO, "replies": []}
    echo_alone: list[float] = []
    mixed: dict[int, list[float]] = {level: [] for level in LEVELS_DB}
    try:
        for text, voice in REPLIES[: args.replies]:
            mic, ref = record_loop(speak(text, voice))
            reply: dict = {"voice": voice, "seconds": round(mic.size / RATE, 2)}
            onset = round((0.3 + USER_AT) * RATE)
            echo_rms = float(np.sqrt(np.mean(np.square(mic[onset:onset + user.size]))))
            user_rms = float(np.sqrt(np.mean(np.square(user))))
            echo_alone += shares(mic, ref, 0, mic.size)
            for level in LEVELS_DB:
                both = mic.copy()
                gain = echo_rms / user_rms * 10 ** (level / 20)
                end = min(both.size, onset + user.size)
                both[onset:end] += gain * user[: end - onset]
                mixed[level] += shares(both, ref, onset, end)
                for guard in (False, True):
                    starts = [s for s in replay(both, ref, guard) if s >= onset / RATE - 0.1]
                    heard_after = round(starts[0] - onset / RATE, 3) if starts else None
                    reply[f"barge_in_{level}dB_{KEYS[guard]}_s"] = heard_after
            for guard in (False, True):
                reply[f"self_starts_{KEYS[guard]}"] = len(replay(mic, ref, guard))
                reply[f"self_starts_after_jump_{KEYS[guard]}"] = len(replay(jumped(mic, args.jump_ms), ref, guard))
            result["replies"].append(reply)
    finally:
        sink.close()
    result["totals"] = totals(result["replies"])
    result["echo_share_echo_alone"] = summary(echo_alone)
    for level in LEVELS_DB:
        result[f"echo_share_user_{level}dB"] = summary(mixed[level])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

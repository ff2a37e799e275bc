"""Voice mode end to end on a PulseAudio room of null sinks; prints JSON.

The room (GUIDE §6): the assistant plays into `asink` and listens to `vsink.monitor`; `vsink` hears
both the assistant (loopback from `asink.monitor`: the echo path) and the "user" (espeak-ng speech
played straight into `vsink`, as a voice reaches a laptop's microphone). A recorder sink `rec` gets
the assistant on its left channel and the room (`vsink.monitor`) on its right, both through loopbacks
of the same latency, and one `parec` records it: every time below is read from sample positions in
that one recording, the user's speech where each clip is found in the room's channel by correlation
(the echo is mixed in there). Before the run a tone played as the user must be on the room's channel
alone (a loopback PulseAudio moved once put the user on the assistant's channel, and every barge-in
then "lasted" as long as the user spoke).

- end of user speech -> first assistant audio: p50 / p95 (targets 1.0 / 1.5 s), with the pipeline's
  own per-stage breakdown (transcript, first token, first audio) from its events;
- barge-in: user speech onset during playback -> assistant audio stopped (held at the onset, see
  `runtime.audio.hearing`), p95 (target 0.3 s), split into hearing it (onset -> hold, the stop less
  the output path) and the output path (PortAudio's buffer and the sound server, measured on every
  reply as its start event -> its first sound in the recording). A reply that ended on its own
  before the hold is not a barge-in (`ended_before_hold`): the default model's replies can be one
  word. Each story is asked in a new conversation: the tiny default model copies the cut replies
  before it ("Yes," to all);
- unanswered: questions no reply was heard to within ANSWER_WITHIN (the model said nothing), counted
  apart from the latencies;
- self-interruptions: interruptions with no user speech within USER_SLACK of them in the recording
  (target 0; counting interruptions beyond the barge-ins played hid one when a barge-in came too late);
  and playback holds: onsets of speech over the assistant, and false starts among them (a hold
  that ended with the reply resuming: a ~0.4 s gap in it);
- STT: WER of the pipeline's final transcripts vs faster-whisper called directly on the same clips, on
  the fixed WER set (convert.onnx.speech: 32 sentences, 321 words, four voices) said into the room after
  the conversation to a session that transcribes without answering (the same hearing, AEC3, VAD and
  streaming transcriber), and on the conversation's questions (`questions`: a dozen short ones in three
  voices, repeated, so few distinct clips that one word moves it by ~1.5 points). Also Whisper on the
  audio the pipeline heard (`direct_on_heard`: what it decoded at the end of each turn, decoded as the
  pipeline decodes, at temperature 0 only): its gap to `direct` is the room's audio path (device
  resampling, the loopbacks, AEC3), the utterance's bounds and the decode options, the pipeline's gap to
  it the pipeline's own (streaming decodes); and on the clean clip placed where that audio has it, in
  silence of its length (`direct_where_heard`: the bounds alone, the pre-roll's ~0.25 s of silence before
  the words). Whisper base on espeak speech is chaotic: the same clip shifted by one sample or played at
  0.8 of its level moves its WER by ~1 point (both are printed), and silence before it (0.1-1.0 s) by
  up to 4 points with no trend (2026-12-05, beam 5: 10.6-15.3% against 14.3% without), so a gap within
  that is noise. Apart: the WER of the cut-ins (said over the assistant, where AEC3's double-talk suppression
  can take their first word) vs Whisper on the same clips, on the audio the pipeline decoded for each
  (`direct_on_heard`) and on the clip at that audio's level (`direct_at_heard_level`: the room hands a cut-in
  on at about half its level, and a phrase Whisper gets right at one level it may not at another), with what
  the pipeline heard; and the cut-ins
  that only ask to stop ("Wait, stop please.", voice.stop_phrases): how many of them were left unanswered
  (`stop_requests`: a misheard one is answered), and whether any other cut-in was taken for one;
- idle listening CPU (% of one core, target < 5) in three rooms: digital silence, a quiet microphone's hiss
  (white noise at -60 dBFS, as heard at 16 kHz) and a noisy room (-44 dBFS: a fan, a TV), where the
  quiet gate (runtime.audio.quiet_gate) cannot skip Silero; with --soak M, RSS growth over M minutes.

    python benchmarks/bench_voice.py [--turns 20] [--barge-ins 10] [--soak 10] [--reverb 0.5,5]

With --reverb RT60,DRR the echo (only) reaches the microphone through a made-up room response
(`reverberant_echo.py`: the direct sound, then a tail decaying by 60 dB in RT60 seconds, DRR dB under it)
instead of a loopback; the user's voice stays dry.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "audio"))

from pulse import NullSink, _pactl, ensure_pulse, play_into  # noqa: E402

if TYPE_CHECKING:
    from runtime.audio.session import VoiceSession
    from runtime.audio.stop_request import StopPhrases

RATE = 16_000
REC_RATE = 48_000
ON = 0.01  # amplitude above which a recorded sample is sound
# a barge-in is played this long after the reply's first audio: the default model's replies to the
# stories are often one short sentence, and a later cut-in (0.6 s before) found some already over; at 0.3 s the
# cut-in was held 0.36-0.49 s into the reply's sound, at the edge of what the assistant takes for the user's
# turn going on rather than an answer to the reply (runtime.audio.assistant.REACTION, 0.35 s)
CUT_IN_AFTER = 0.5
USER_SLACK = 1.0  # seconds around the user's recorded speech in which an interruption is the user's
LOCATE_WITHIN = 1.5  # seconds after paplay is started within which its clip reaches the room
ANSWER_WITHIN = 10.0  # seconds after a question within which a reply's first sound counts as its answer
# A reply's start event -> its first sound is ~0.08-0.10 s in a settled room. In the first run after a
# PulseAudio restart it was 0.2 s throughout (null sinks start at ~1 s of latency and the loopbacks adapt):
# every time read from the recording is then off, and the result says so.
SETTLED_OUTPUT_PATH = 0.15

# idle rooms: white noise at this level (dBFS RMS as heard at 16 kHz) is played into the room, None: silence
IDLE_ROOMS = {"silent_room": None, "hiss_-60dB": -60.0, "noisy_room_-44dB": -44.0}

QUESTIONS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "Can you name a fruit that is yellow?",
    "What is two plus two?",
    "Which animal says moo?",
    "What do bees make?",
    "Where does the sun rise?",
    "What is frozen water called?",
    "How many days are in a week?",
    "What is the opposite of hot?",
    "Which planet do we live on?",
)
# Barge-in turns ask for long answers, so the reply is still playing when the user cuts in.
STORIES = ("Tell me a long story about a dragon and a knight.", "Describe a busy market in a big city.",
           "Tell me everything about the planets of the solar system.", "Explain how bread is made, step by step.")
INTERRUPTIONS = ("Wait, stop please.", "Hold on a second.", "Sorry, let me interrupt.", "Stop, that is enough.")


def idle_cpu_percent(process: psutil.Process, seconds: float, noise_db: float | None, tmp: Path) -> float:
    """CPU of the listening process (% of one core) over `seconds` with nobody speaking, the room quiet or
    filled with white noise at `noise_db` (paplay's own CPU is not the process's)."""
    from runtime.audio.quiet_gate import FLOOR_SECONDS

    player = None
    if noise_db is not None:
        # the noise reaches the microphone, and the quiet room's floor (the quietest frame of the last FLOOR_SECONDS)
        # is the noise's, not the silence before it: until then every frame of it is scored as a possible voice
        settle = 1.0 + FLOOR_SECONDS
        hiss = np.random.default_rng(0).normal(0.0, 10 ** (noise_db / 20), int((seconds + settle + 1.0) * 16000))
        player = threading.Thread(target=play_into, args=("vsink", hiss.astype(np.float32), tmp / "hiss.wav"))
        player.start()
        time.sleep(settle)
    cpu0, t0 = process.cpu_times(), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = process.cpu_times(), time.monotonic()
    if player is not None:
        player.join()
    return (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0) * 100


def build_room(reverb: tuple[float, float] | None = None) -> dict[str, object]:
    """Sinks and loopbacks for the room and the two-channel recorder; returns what to unload later. With
    `reverb` (RT60 seconds, direct-to-reverberant dB) the echo path goes through that room response."""
    ensure_pulse()
    modules = []
    echo = None
    sinks = {name: NullSink(name) for name in ("asink", "vsink")}
    if "rec" not in _pactl("list", "short", "sinks").split():
        modules.append(_pactl("load-module", "module-null-sink", "sink_name=rec", "channels=2",
                              f"rate={REC_RATE}", "channel_map=front-left,front-right").strip())
    for side, channel in (("rec_a", "front-left"), ("rec_u", "front-right")):
        modules.append(_pactl("load-module", "module-remap-sink", f"sink_name={side}", "master=rec", "channels=1",
                              f"master_channel_map={channel}", "channel_map=mono").strip())
    if reverb is not None:
        echo = subprocess.Popen([sys.executable, str(Path(__file__).with_name("reverberant_echo.py")), "asink.monitor",
                                 "vsink", *map(str, reverb)])
    paths = [("asink.monitor", "rec_a"), ("vsink.monitor", "rec_u")] + ([] if reverb else [("asink.monitor", "vsink")])
    for source, sink in paths:
        # pinned, so no policy module can move them: once the assistant's channel recorded vsink, the user
        # included, and every cut-in seemed to last as long as the user spoke
        modules.append(_pactl("load-module", "module-loopback", f"source={source}", f"sink={sink}",
                              "latency_msec=20", "source_dont_move=true", "sink_dont_move=true").strip())
    _pactl("set-default-sink", "asink")
    _pactl("set-default-source", "vsink.monitor")
    return {"modules": modules, "sinks": sinks, "echo": echo}


def say_as_user(clip: np.ndarray, path: Path) -> None:
    """Play a 16 kHz clip into the room as the user, at the room's own rate: left to the sound server, the
    clip is resampled by its default, speex-float-1, whose artifacts a voice reaching a real microphone
    does not have (Whisper base wrote 3 more errors on the fixed WER set through it, 2 runs)."""
    rate = room_rate()
    play_into("vsink", soxr.resample(clip, RATE, rate, quality="VHQ").astype(np.float32), path, rate=rate)


@cache
def room_rate() -> int:
    """The sample rate of the room's sink (`vsink`), as the sound server reports it."""
    line = next(line for line in _pactl("list", "short", "sinks").splitlines() if line.split()[1] == "vsink")
    return int(next(field for field in line.split() if field.endswith("Hz"))[:-2])


@cache
def soak_clip(text: str, voice: str) -> np.ndarray:
    """One array per question and voice, however often the soak says it: `said` keeps every clip played, and
    a new copy each turn (~100 kB) would count as the session's growth."""
    from convert.onnx.speech import speak

    return speak(text, voice)


def check_room(tmp: Path) -> None:
    """A tone played as the user must reach the room's channel only, or every time read is wrong."""
    recording = Recording(tmp / "check.raw")
    time.sleep(0.3)
    play_into("vsink", 0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE).astype(np.float32),
              tmp / "tone.wav")
    time.sleep(0.2)
    assistant, room = recording.stop()
    leak, heard = float(np.abs(assistant).max()), float(np.abs(room).max())
    if leak > ON or heard < 10 * ON:
        raise SystemExit(f"bench_voice: the room is miswired (a tone played as the user peaks at {heard:.3f} on the "
                         f"room's channel, {leak:.3f} on the assistant's); restart PulseAudio (pulseaudio -k) and "
                         "run again")


def tear_down(room: dict[str, object]) -> None:
    if room.get("echo") is not None:
        room["echo"].terminate()  # type: ignore[union-attr]
        room["echo"].wait(5)  # type: ignore[union-attr]
    for module in reversed(room["modules"]):  # type: ignore[index]
        subprocess.run(["pactl", "unload-module", module], capture_output=True)


class Recording:
    """One parec of the recorder sink's monitor: left = assistant, right = the room, one clock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(["parec", "-d", "rec.monitor", "--format=s16le", f"--rate={REC_RATE}",
                                      "--channels=2", "--latency-msec=10"], stdout=path.open("wb"))
        self.started = time.monotonic()

    def stop(self) -> tuple[np.ndarray, np.ndarray]:
        self.proc.terminate()
        self.proc.wait()
        data = np.frombuffer(self.path.read_bytes(), dtype="<i2").astype(np.float32) / 32768
        data = data[: data.size // 2 * 2].reshape(-1, 2)
        return data[:, 0], data[:, 1]


def _sound_runs(x: np.ndarray, gap: float) -> list[tuple[int, int]]:
    """[start, end) sample ranges of sound, merging runs separated by less than `gap` seconds."""
    loud = np.flatnonzero(np.abs(x) > ON)
    if not loud.size:
        return []
    splits = np.flatnonzero(np.diff(loud) > gap * REC_RATE)
    starts = np.concatenate([[loud[0]], loud[splits + 1]])
    ends = np.concatenate([loud[splits], [loud[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def cross_correlation(signal: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """[k]: `clip` against `signal` from sample k on (one FFT); a lag k < 0 (the clip starting before the signal)
    is at [size + k], from the end."""
    size = 1 << int(np.ceil(np.log2(signal.size + clip.size)))
    return np.fft.irfft(np.fft.rfft(signal, size) * np.conj(np.fft.rfft(clip, size)), size)


def user_runs_in(room: np.ndarray, said: list[tuple[float, np.ndarray]]) -> list[tuple[float, float]]:
    """(start, end) recording seconds of the user's speech: each clip found in the room's channel, where the
    echo is mixed in, by cross-correlation near the time it was played, then its own sound runs."""
    runs = []
    for played_at, clip in said:
        clip = soxr.resample(clip, RATE, REC_RATE).astype(np.float32)
        lo = max(0, round((played_at - 0.1) * REC_RATE))
        window = room[lo: lo + round(LOCATE_WITHIN * REC_RATE) + clip.size]
        if window.size < clip.size:
            continue  # (the recording stopped before it was played)
        at = (lo + int(np.argmax(cross_correlation(window, clip)[: window.size - clip.size + 1]))) / REC_RATE
        runs += [(at + s / REC_RATE, at + e / REC_RATE) for s, e in _sound_runs(clip, gap=0.35)]
    return runs


def sentences_in_room(cfg: object, count: int, tmp: Path) -> list[tuple[str, str, str, np.ndarray]]:
    """The fixed WER set (convert.onnx.speech: 32 sentences, four voices) said into the room to a session that
    transcribes without answering: the conversation's hearing, AEC3, VAD and streaming transcriber, in a
    quiet room. (text, voice, transcript, the audio its final decode read) for each; a sentence heard as
    two turns has both, joined."""
    from convert.onnx.speech import speak, wer_set
    from runtime.audio import events as ev
    from runtime.audio.session import VoiceSession

    turns: queue.SimpleQueue[str] = queue.SimpleQueue()
    session = VoiceSession.open(cfg, None, lambda event: isinstance(event, ev.UserTurn) and turns.put(event.text),
                                reply=False)
    decoded = keep_decoded_audio(session)
    heard = []
    session.start()
    try:
        time.sleep(1.0)
        for text, voice in wer_set()[:count]:
            before = len(decoded)
            say_as_user(speak(text, voice), tmp / "sentence.wav")
            parts = []
            try:
                parts.append(turns.get(timeout=10))
                time.sleep(1.5)  # a sentence split at a pause: its second turn ends within this
                while True:
                    parts.append(turns.get_nowait())
            except queue.Empty:
                pass
            audio = np.concatenate(final_decodes(decoded[before:]) or [np.zeros(0, np.float32)])
            heard.append((text, voice, " ".join(parts), audio))
    finally:
        session.close()
    return heard


def keep_decoded_audio(session: VoiceSession) -> list[np.ndarray]:
    """A list that receives the audio each of the session's final decodes reads (speculative ones too),
    in order, as they happen."""
    decoded: list[np.ndarray] = []
    transcriber = session.assistant.transcriber
    finish = transcriber.finish

    def finish_keeping_audio() -> str:
        decoded.append(transcriber.audio.copy())
        return finish()

    transcriber.finish = finish_keeping_audio
    return decoded


def final_decodes(decoded: list[np.ndarray]) -> list[np.ndarray]:
    """The audio of each turn's last decode: a speculative one that the user's going on made stale is the
    start of the next one."""
    return [audio for audio, later in zip(decoded, [*decoded[1:], None])
            if later is None or not (later.size >= audio.size and np.array_equal(later[:audio.size], audio))]


def placed_where_heard(clip: np.ndarray, heard: np.ndarray) -> np.ndarray:
    """`clip` where it lies in `heard` (found by cross-correlation), with silence around it to `heard`'s length:
    the utterance's bounds as the pipeline cut them, without the room's sound."""
    correlation = cross_correlation(heard, clip)
    lag = int(np.argmax(correlation))
    lag = lag if lag < correlation.size // 2 else lag - correlation.size  # the clip starts `lag` samples into heard
    placed = np.zeros_like(heard)
    start, skip = max(lag, 0), max(-lag, 0)
    part = clip[skip:skip + max(heard.size - start, 0)]
    placed[start:start + part.size] = part
    return placed


def stt_errors(heard: list[tuple[str, str, str, np.ndarray]], direct: object, pipeline_stt: object) -> dict[str, object]:
    """Corpus WER of the pipeline's transcripts and of Whisper called directly on the same clips, on them
    changed inaudibly (shifted by one sample, at 0.8 of the level: how far Whisper base moves on its own,
    the noise floor), on the audio the pipeline's final decode read (as the pipeline decodes: temperature 0
    only) and on the clean clip placed where that audio has it (the pipeline's bounds: a pre-roll of silence
    before the words, a little after); and the sentences the pipeline got more wrong than the direct call."""
    from convert.onnx.speech import speak, word_errors

    errors = {"pipeline": 0, "direct": 0, "direct_on_heard": 0, "direct_where_heard": 0,
              "direct_shifted_1_sample": 0, "direct_at_gain_0_8": 0}
    words = 0
    worse = []  # where the pipeline made more errors than the direct call: what each wrote
    for text, voice, transcript, audio in heard:
        clip = speak(text, voice)
        direct_text = direct.transcribe(clip).text
        direct_errors, n = word_errors(text, direct_text)
        pipeline_errors = word_errors(text, transcript)[0]
        if pipeline_errors > direct_errors:
            worse.append({"said": text, "voice": voice, "pipeline": transcript, "direct": direct_text.strip()})
        errors["direct"] += direct_errors
        errors["pipeline"] += pipeline_errors
        words += n
        errors["direct_shifted_1_sample"] += word_errors(
            text, direct.transcribe(np.concatenate([[0.0], clip]).astype(np.float32)).text)[0]
        errors["direct_at_gain_0_8"] += word_errors(text, direct.transcribe(0.8 * clip).text)[0]
        errors["direct_on_heard"] += word_errors(text, pipeline_stt.transcribe(audio).text if audio.size else "")[0]
        placed = placed_where_heard(clip, audio) if audio.size else audio
        errors["direct_where_heard"] += word_errors(text, pipeline_stt.transcribe(placed).text if audio.size else "")[0]
    return {**{name: round(count / max(words, 1), 4) for name, count in errors.items()},
            "sentences": len(heard), "words": words, "pipeline_worse_on": worse}


def at_level_of(clip: np.ndarray, heard: np.ndarray) -> np.ndarray:
    """`clip` scaled to the level `heard` has it at (their loudest 0.1%): Whisper base hears an espeak phrase
    differently at another level ("Stop, that is enough." clean: "Stop. That's it."; at 0.5-0.7 of it, as
    the room hands it on: "Stop, let's do it herf."), which is not the pipeline's doing."""
    if not heard.size:
        return clip
    return (clip * np.percentile(np.abs(heard), 99.9) / max(np.percentile(np.abs(clip), 99.9), 1e-6)).astype(
        np.float32)


def stop_requests(cut_ins: list[tuple[str, str, bool, np.ndarray]], stop: StopPhrases) -> dict[str, int]:
    """Of the cut-ins that only asked to stop, how many went unanswered (the rest were misheard); and the
    other cut-ins taken for a stop (target 0: a question left unanswered)."""
    asked = [unanswered for said, _, unanswered, _ in cut_ins if stop.asked_by(said)]
    return {"said": len(asked), "unanswered": sum(asked),
            "others_unanswered": sum(unanswered for said, _, unanswered, _ in cut_ins if not stop.asked_by(said))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=12, help="questions asked (each answered in full)")
    parser.add_argument("--barge-ins", type=int, default=8, help="replies interrupted by the user")
    parser.add_argument("--soak", type=float, default=0.0, help="minutes of scripted conversation for RSS growth")
    parser.add_argument("--sentences", type=int, default=32,
                        help="sentences of the fixed WER set said to a transcribing session (at most 32)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle listening to measure CPU")
    parser.add_argument("--reverb", type=lambda v: tuple(map(float, v.split(","))), default=None, metavar="RT60,DRR",
                        help="the echo through a made-up room response (reverberant_echo.py), e.g. 0.5,5")
    args = parser.parse_args()

    room = build_room(args.reverb)
    os.environ["PULSE_SINK"], os.environ["PULSE_SOURCE"] = "asink", "vsink.monitor"
    try:
        print(json.dumps(run(args), indent=2))
    finally:
        tear_down(room)


def run(args: argparse.Namespace) -> dict[str, object]:
    from convert.onnx.speech import speak, word_errors
    from edge_ai.config import Config
    from runtime.audio import events as ev
    from runtime.audio.hearing import FalseStart, SpeechOnset
    from runtime.audio.session import VoiceSession
    from runtime.llm.loading import open_engine
    from runtime.llm.scheduler import Scheduler

    cfg = Config().with_values({"voice.mode": "full", "sampling.temperature": 0.0, "sampling.max_tokens": 48})
    events: list[object] = []
    cond = threading.Condition()

    def on_event(event: object) -> None:
        with cond:
            events.append(event)
            cond.notify_all()

    def wait_for(kind: type | tuple[type, ...], after: int, timeout: float) -> object | None:
        deadline = time.monotonic() + timeout
        with cond:
            while True:
                found = next((e for e in events[after:] if isinstance(e, kind)), None)
                if found is not None or time.monotonic() > deadline:
                    return found
                cond.wait(0.05)

    def wait_listening(after: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with cond:
            while time.monotonic() < deadline:
                states = [e.state for e in events[after:] if isinstance(e, ev.StateChanged)]
                if states and states[-1] is ev.VoiceState.LISTENING and ev.VoiceState.SPEAKING in states:
                    return
                cond.wait(0.05)

    scheduler = Scheduler(open_engine(cfg), queue_size=2, name="bench")
    session = VoiceSession.open(cfg, scheduler, on_event)
    holds = {"onsets": 0, "false_starts": 0}
    hold_times: list[float] = []  # monotonic times playback was held at an onset of speech
    hear = session.hearing._on_hear

    def count_holds(event: object) -> None:
        if isinstance(event, SpeechOnset):
            holds["onsets"] += 1
            hold_times.append(time.monotonic())
        elif isinstance(event, FalseStart):
            holds["false_starts"] += 1
        hear(event)

    session.hearing._on_hear = count_holds
    heard_audio = keep_decoded_audio(session)  # the utterance audio of each final transcript, in order
    tmp = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    process = psutil.Process()
    check_room(tmp)
    session.start()
    recording = Recording(tmp / "room.raw")
    said: list[tuple[float, np.ndarray]] = []  # (recording seconds when it was played, clip) per user utterance

    def say(clip: np.ndarray, name: str) -> None:
        said.append((time.monotonic() - recording.started, clip))
        say_as_user(clip, tmp / name)

    try:
        time.sleep(3.0)  # the conversation's warm-up prefill (runtime.audio.assistant) is over by then
        idle_cpu = {room: idle_cpu_percent(process, args.idle, noise_db, tmp) for room, noise_db in IDLE_ROOMS.items()}

        questions_heard: list[tuple[str, str, str, np.ndarray]] = []  # (question, voice, transcript, audio decoded)
        # (what the user said cutting in, what the pipeline heard, unanswered, the audio it decoded for it)
        cut_ins: list[tuple[str, str, bool, np.ndarray]] = []
        voices = ("en-us", "en-gb", "en-us+f3")
        for i in range(args.turns + args.barge_ins):
            barge = i >= args.turns
            question = STORIES[i % len(STORIES)] if barge else QUESTIONS[i % len(QUESTIONS)]
            clip = speak(question, voices[i % len(voices)])
            if barge:
                session.assistant.history.clear()  # a new conversation (the assistant is listening, idle)
            mark = len(events)
            say(clip, f"q{i}.wav")
            user_turn = wait_for(ev.UserTurn, mark, 10)
            turn_audio = heard_audio[-1] if heard_audio else np.zeros(0, dtype=np.float32)
            if barge and wait_for(ev.TurnLatency, mark, 15) is not None:
                time.sleep(CUT_IN_AFTER)
                words = INTERRUPTIONS[i % len(INTERRUPTIONS)]
                cut_in = len(events)
                say(speak(words), f"b{i}.wav")
                cut_turn = wait_for((ev.UserTurn, ev.StopAsked), cut_in, 10)
                cut_audio = heard_audio[-1] if cut_turn is not None and heard_audio else np.zeros(0, np.float32)
                cut_ins.append((words, cut_turn.text if cut_turn is not None else "", isinstance(cut_turn, ev.StopAsked),
                                cut_audio))
                if not isinstance(cut_turn, ev.StopAsked):
                    wait_listening(cut_in, 30)  # the reply to the cut-in is heard out, not measured
                time.sleep(0.8)
            else:
                wait_listening(mark, 30)
                time.sleep(0.8)
            if user_turn is not None:
                questions_heard.append((question, voices[i % len(voices)], user_turn.text, turn_audio))
        soak = None
        soak_from = time.monotonic() - recording.started  # (recording seconds) no barge-ins are played after it
        if args.soak:
            rss_start, soak_turns, end = process.memory_info().rss, 0, time.monotonic() + args.soak * 60
            while time.monotonic() < end:
                mark = len(events)
                clip = soak_clip(QUESTIONS[soak_turns % len(QUESTIONS)], voices[soak_turns % len(voices)])
                say(clip, "soak.wav")
                wait_listening(mark, 30)
                heard_audio.clear()  # not scored; kept, ~160 kB a turn would count as the session's growth
                soak_turns += 1
            soak = {"minutes": args.soak, "turns": soak_turns,
                    "rss_growth": round(process.memory_info().rss / rss_start - 1, 4)}
    finally:
        assistant_audio, room_audio = recording.stop()
        session.close()
        scheduler.close()
    sentences_heard = sentences_in_room(cfg, args.sentences, tmp)

    assistant_runs = [(s / REC_RATE, e / REC_RATE) for s, e in _sound_runs(assistant_audio, gap=0.25)]
    user_runs = user_runs_in(room_audio, said)
    speaking_at = [e.at - recording.started for e in events
                   if isinstance(e, ev.StateChanged) and e.state is ev.VoiceState.SPEAKING]
    # every reply's start event -> its first sound in the recording: the path any sound, or silence, takes. A
    # sound server running for long drifts to a longer path (0.09 -> 0.26 s over a 10-minute soak): each hold
    # is placed with the path of the reply it held, and the room is judged on the replies before the soak
    output_paths = [(t, min(s for s, _ in assistant_runs if s >= t) - t) for t in speaking_at
                    if any(t <= s < t + 0.5 for s, _ in assistant_runs)]
    measured = [path for t, path in output_paths if t < soak_from] or [path for _, path in output_paths]
    output_path = statistics.median(measured) if measured else 0.0
    if output_path > SETTLED_OUTPUT_PATH:
        print(f"bench_voice: the room was not settled (output path {output_path:.3f} s, ~0.09 when it is): its "
              "times are off; run it again", file=sys.stderr)

    def path_at(held: float) -> float:
        """The output path of the reply in progress at `held` (recording seconds)."""
        return next((path for t, path in reversed(output_paths) if t <= held), output_path)

    holds_heard = [held + path_at(held) for held in (t - recording.started for t in hold_times)]  # in the room
    latencies, unanswered, barge_stops, hearing, ended_before_hold = [], 0, [], [], 0
    for start, end in user_runs:
        during = [(s, e) for s, e in assistant_runs if s < start < e]
        if during:  # the user spoke over the assistant: how long until it went quiet
            if start >= soak_from:
                continue  # in the soak, a question that overlapped a reply's last sound is no barge-in
            stop = during[0][1]
            hold = next((h for h in holds_heard if start - 0.05 <= h <= start + 1.0), None)
            if hold is None or stop < hold - 0.03:
                ended_before_hold += 1
            else:
                barge_stops.append(stop - start)
                hearing.append(stop - start - path_at(hold))
            continue
        after = [s for s, _ in assistant_runs if end <= s < end + ANSWER_WITHIN]
        if after:
            latencies.append(after[0] - end)
        elif not any(s < end + ANSWER_WITHIN for s, _ in user_runs if s > end):
            unanswered += 1  # (a question followed by more speech at once is the barge-in's own)
    stages = [e for e in events if isinstance(e, ev.TurnLatency)]
    # an interruption with no user speech around it (the recording's user channel) is the assistant's own
    user_spans = [(s - USER_SLACK, e + USER_SLACK) for s, e in user_runs]
    self_interruptions = sum(1 for e in events if isinstance(e, ev.Interrupted)
                             and not any(s <= e.at - recording.started <= end for s, end in user_spans))

    from runtime.audio.stt import open_stt

    direct = open_stt(cfg)  # faster-whisper with the conversation's beam (voice.stt_beam_size), a temperature fallback
    pipeline_stt = session.assistant.transcriber.stt  # the pipeline's own model and decode options

    # the cut-ins: spoken over the assistant, where AEC3's double-talk suppression may take the first word
    cut_in_errors = {"pipeline": 0, "direct": 0, "direct_on_heard": 0, "direct_at_heard_level": 0}
    cut_in_words = 0
    for spoken, heard_text, _, audio in cut_ins:
        clip = speak(spoken)
        cut_in_errors["direct"] += word_errors(spoken, direct.transcribe(clip).text)[0]
        cut_in_errors["direct_on_heard"] += word_errors(
            spoken, pipeline_stt.transcribe(audio).text if audio.size else "")[0]
        cut_in_errors["direct_at_heard_level"] += word_errors(spoken, direct.transcribe(at_level_of(clip, audio)).text)[0]
        errors_here, n = word_errors(spoken, heard_text)
        cut_in_errors["pipeline"] += errors_here
        cut_in_words += n

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 3) if values else None

    return {
        "turns": args.turns, "barge_ins": args.barge_ins,
        "end_of_speech_to_first_audio_s": {"p50": pct(latencies, 50), "p95": pct(latencies, 95), "n": len(latencies),
                                           "target_p50": 1.0, "target_p95": 1.5},
        "unanswered": unanswered,
        "stages_s": {name: round(statistics.median(getattr(s, name) for s in stages), 3) if stages else None
                     for name in ("transcript", "first_token", "first_audio")},
        # where a slow turn's time went (the pipeline's own clock, from the end of speech it heard)
        "stages_p95_s": {name: pct([getattr(s, name) for s in stages], 95)
                         for name in ("transcript", "first_token", "first_audio")},
        "barge_in_stop_s": {"p50": pct(barge_stops, 50), "p95": pct(barge_stops, 95), "n": len(barge_stops),
                            "target_p95": 0.3, "hearing_p50": pct(hearing, 50), "hearing_p95": pct(hearing, 95),
                            "output_path": round(output_path, 3), "ended_before_hold": ended_before_hold,
                            "each": sorted(round(stop, 3) for stop in barge_stops)},  # n ~10: p95 is the worst one
        "self_interruptions": self_interruptions,
        "playback_holds": holds,
        "wer": {**stt_errors(sentences_heard, direct, pipeline_stt),
                "questions": stt_errors(questions_heard, direct, pipeline_stt),
                "cut_ins": {**{name: round(count / max(cut_in_words, 1), 4) for name, count in cut_in_errors.items()},
                            "heard": [text for _, text, _, _ in cut_ins]}},
        "stop_requests": stop_requests(cut_ins, session.assistant.options.stop),
        "idle_cpu_percent_of_one_core": {**{room: round(cpu, 2) for room, cpu in idle_cpu.items()}, "target": 5.0},
        "soak": soak,
        "mode": session.mode.mode,
        "room_settled": output_path <= SETTLED_OUTPUT_PATH,
    }


if __name__ == "__main__":
    main()

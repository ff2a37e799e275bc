"""`edge-ai audio devices|test`, `edge-ai listen` and the paths where audio is missing, run as a user runs them,
on the PulseAudio null sink; and a sound server that goes away under a running stream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pulse import ensure_pulse, play_into

from convert.onnx.speech import speak
from runtime.audio.selftest import MAX_HOLDS, MIN_ERLE_DB

pytestmark = pytest.mark.slow


def edge_ai(*args: str, timeout: float = 300, env: dict[str, str] | None = None,
            prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def test_devices_are_listed(room):
    result = edge_ai("audio", "devices", "--json")
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)
    assert any(d["default_input"] and d["inputs"] > 0 for d in devices)
    assert any(d["default_output"] and d["outputs"] > 0 for d in devices)


def test_audio_test_measures_the_loop_and_saves_its_verdict(room, edge_home):
    """The null sink's loop is a real echo path, and a jumpy one: PulseAudio moves its delay by up to ~10 ms
    a few times in a test (measured: 62 -> 71 ms in steps), and AEC3 leaks echo after each jump until it
    finds the delay again, for 0.03-0.6 s; the echo guard takes that leak for the assistant's voice, so a
    conversation does not cut itself off. The verdict's rule is tested on fixed recordings in
    test_selftest. Here: the figures are measured, agree with the verdict, and the verdict is saved."""
    result = edge_ai("audio", "test", "--json")
    assert result.returncode == 0, result.stderr
    check = json.loads(result.stdout)
    assert 0 < check["delay_ms"] < 500
    assert check["erle_db"] >= 10  # 17-98 dB measured: the echo is cancelled, if not at every moment
    assert check["vad_false_rate_raw"] > 0.3  # the assistant's voice alone does trigger a VAD...
    assert check["vad_false_rate_aec"] < check["vad_false_rate_raw"] / 3  # ...far less once it is cancelled
    full = check["erle_db"] >= MIN_ERLE_DB and check["false_starts"] == 0 and check["holds"] <= MAX_HOLDS
    assert check["recommended"] == ("full" if full else "half"), check
    assert check["seconds"] < 15
    saved = json.loads((edge_home / "data" / "audio.json").read_text()) if (edge_home / "data").exists() else None
    from runtime.audio.session import saved_audio_check

    assert (saved or saved_audio_check())["recommended"] == check["recommended"]


def test_listen_prints_what_is_said_once_it_says_listening(room, tmp_path):
    """The user speaks the moment "listening" is printed, as a user does: not a word may be lost to a
    microphone that is still starting. The room's own reader of the sink's monitor is stopped first: a
    monitor nobody reads starts ~2 s after a stream opens on it, as a Bluetooth headset does."""
    said = speak("Please turn on the kitchen lights.")
    room.close()
    process = subprocess.Popen([sys.executable, "-m", "edge_ai", "listen", "--seconds", "20", "--events"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        stderr = []
        for line in process.stderr:
            stderr.append(line)
            if line.startswith("listening"):
                play_into("vsink", said, tmp_path / "said.wav")
                break
        stdout, rest = process.communicate(timeout=60)
    finally:
        process.kill()
        room.make_default()
    assert process.returncode == 0, "".join(stderr) + rest
    events = [json.loads(line) for line in stdout.splitlines()]
    turns = [e["text"] for e in events if e["event"] == "UserTurn"]
    assert turns and turns[0].lower().startswith("please turn on the kitchen light"), "".join(stderr) + rest


def test_voice_prints_both_sides_and_a_request_to_stop_gets_no_answer(room, registered_model, tmp_path):
    """`edge-ai voice`, as a user runs it: a question is answered aloud (both sides printed, and the latency),
    then "Okay, stop." is printed as asked and left unanswered (not "Stop, please.": Whisper base reads espeak's
    "please" as "clean", or "Stop" as "Top", for 3 of 12 placements of the clip; "Okay, stop." 12 of 12)."""
    process = subprocess.Popen([sys.executable, "-m", "edge_ai", "voice", "--mode", "full", "--seconds", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               env={**os.environ, "EDGE_AI_SAMPLING_MAX_TOKENS": "24"})
    lines: list[str] = []
    try:
        for line in process.stderr:
            if line.startswith("listening"):
                break
        play_into("vsink", speak("What is the capital of France?"), tmp_path / "question.wav")
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("assistant:"):
                break
        time.sleep(1.0)
        play_into("vsink", speak("Okay, stop."), tmp_path / "stop.wav")
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("you:"):
                break
        time.sleep(3.0)  # time enough for an answer to be spoken, were one started
    finally:
        process.terminate()
        rest, errors = process.communicate(timeout=30)
    lines += rest.splitlines()
    assert lines[0].startswith("you: ") and "capital" in lines[0].lower(), lines
    assert lines[1].startswith("  latency: transcript") and lines[2].startswith("assistant: "), (lines, errors)
    assert len(lines) == 4 and lines[3].startswith("you: ") and "stop" in lines[3].lower(), (lines, errors)
    assert lines[3].endswith(" [asked to stop: not answered]"), lines


def test_a_missing_device_is_one_line_and_a_non_zero_exit(room):
    result = edge_ai("voice", "--input", "no-such-microphone", "--mode", "full")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "no-such-microphone" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")
def test_without_portaudio_voice_says_why_and_text_chat_still_works(registered_model, tmp_path):
    """PortAudio hidden from the process (an empty file mounted over the library, in a private mount namespace)."""
    found = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    paths = [line.split("=>")[-1].strip() for line in found.splitlines() if "libportaudio.so" in line]
    assert paths, "PortAudio is not installed (apt-get install libportaudio2)"
    library = Path(paths[0])
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    hide = ("unshare", "-m", "sh", "-c", f'mount --bind "{empty}" "{library.resolve()}" && exec "$0" "$@"')
    devices = edge_ai("audio", "devices", prefix=hide)
    assert devices.returncode != 0 and "PortAudio" in devices.stderr and "Traceback" not in devices.stderr
    answer = edge_ai("ask", "-n", "8", "Hello", prefix=hide)
    assert answer.returncode == 0 and answer.stdout.strip()


def test_a_sound_server_that_goes_away_is_reported_and_the_stream_reopens(room):
    from runtime.audio.devices import pick_device
    from runtime.audio.duplex import DuplexStream, Player

    statuses: list[str] = []
    blocks = []
    stream = DuplexStream(pick_device("", "input"), pick_device("", "output"), Player(),
                          lambda mic, ref: blocks.append(mic.size), on_status=statuses.append)
    stream.start()
    try:
        deadline = time.monotonic() + 10
        while not blocks and time.monotonic() < deadline:
            time.sleep(0.1)
        assert blocks
        subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=30)
        deadline = time.monotonic() + 20
        while not any("stopped responding" in s for s in statuses) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("stopped responding" in s for s in statuses), statuses
        ensure_pulse()
        room.make_default()
        deadline = time.monotonic() + 30
        while not any(s == "audio device reopened" for s in statuses) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "audio device reopened" in statuses, statuses
        count, deadline = len(blocks), time.monotonic() + 10
        while len(blocks) < count + 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(blocks) >= count + 10, statuses  # audio flows again
    finally:
        stream.close()

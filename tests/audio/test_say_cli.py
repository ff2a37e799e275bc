"""`edge-ai say` as a user runs it: WAV files Whisper can understand, real playback on the PulseAudio
null sink (recorded from its monitor), stdin, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
from pulse import NullSink
from speech_check import to_16k, word_recall, words_heard

from edge_ai.errors import EdgeAIError


def edge_ai(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, text=True, timeout=120,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return data.astype(np.float32) / 32768.0, wav.getframerate()


def test_say_to_a_wav_file(tmp_path: Path):
    out = tmp_path / "wav" / "hello.wav"
    text = "Please open the window in the kitchen. The weather is sunny and warm today."
    result = edge_ai("say", text, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr and "espeak:en-us" in result.stderr
    samples, rate = read_wav(out)
    assert rate == 22050 and 3.0 < len(samples) / rate < 8.0
    assert word_recall(text, words_heard(samples, rate)) >= 0.8
    assert [p.name for p in out.parent.iterdir()] == ["hello.wav"]  # no temp file left beside it


def test_say_reads_markdown_from_stdin(tmp_path: Path):
    out = tmp_path / "notes.wav"
    markdown = "# Shopping list\n\n- **apples**\n- [bread](https://shop.example.com/bread)\n\n```\nrm -rf /\n```\n"
    result = edge_ai("say", "-", "-o", str(out), stdin=markdown)
    assert result.returncode == 0, result.stderr
    heard = words_heard(*read_wav(out))
    assert word_recall("shopping list apples bread code block omitted", heard) >= 0.8
    assert "rf" not in heard and "https" not in heard


def test_say_options_override_the_config(tmp_path: Path):
    slow, fast = tmp_path / "slow.wav", tmp_path / "fast.wav"
    text = "This sentence is spoken at two different speeds."
    assert edge_ai("say", text, "-o", str(slow), "--voice", "en-gb").returncode == 0
    assert edge_ai("say", text, "-o", str(fast), "--voice", "en-gb", "--rate", "2").returncode == 0
    ratio = len(read_wav(fast)[0]) / len(read_wav(slow)[0])
    assert 0.4 < ratio < 0.7


@pytest.mark.parametrize("args,stdin,message", [
    (("say", ""), None, "nothing to say: the text has no words"),
    (("say", "-"), "```\nonly code\n", None),  # a code block alone is still said (its remark)
    (("say", "hello", "--voice", "zz-nope"), None, "espeak-ng has no voice 'zz-nope'"),
    (("say", "hello", "--backend", "kokoro"), None, "voice.tts_backend"),
    (("say", "hello", "--backend", "piper"), None, "needs a voice file"),
    (("say", "hello", "--model", "/nope/voice.onnx", "--backend", "piper"), None, "does not exist"),
])
def test_say_errors_are_one_line(tmp_path: Path, args, stdin, message):
    out = tmp_path / "out.wav"
    result = edge_ai(*args, "-o", str(out), stdin=stdin)
    if message is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("suffix,file_format", [(".flac", "FLAC"), (".ogg", "OGG"), (".MP3", "MP3")])
def test_say_writes_the_format_the_file_name_asks_for(tmp_path: Path, suffix: str, file_format: str):
    """Not WAV data under another name: the file is what its suffix says, and its words survive the codec."""
    import soundfile

    text = "The train to the city leaves at seven in the morning."
    out = tmp_path / "out" / f"train{suffix}"
    result = edge_ai("say", text, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert soundfile.info(str(out)).format == file_format
    samples, rate = soundfile.read(str(out), dtype="float32")
    assert word_recall(text, words_heard(samples, rate)) >= 0.8
    assert [p.name for p in out.parent.iterdir()] == [out.name]


@pytest.mark.parametrize("name", ["notes.txt", "speech"])
def test_say_to_a_file_name_without_an_audio_format_is_refused(tmp_path: Path, name: str):
    result = edge_ai("say", "hello", "-o", str(tmp_path / "out" / name))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot write {name}" in result.stderr and ".wav, .flac, .ogg, .mp3" in result.stderr
    assert not (tmp_path / "out").exists()


def test_say_to_an_unwritable_place_is_a_clear_error(tmp_path: Path):
    result = edge_ai("say", "hello", "-o", "/proc/edge-ai-test/out.wav")
    assert result.returncode == 1 and "cannot write" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def speaker(room: NullSink) -> NullSink:
    """A null sink of these tests' own, so other audio on the shared PulseAudio server never mixes in;
    `edge-ai say` reaches it through PortAudio's default device with PULSE_SINK set."""
    return NullSink("say_test_sink")


def record_while(command: list[str], sink: NullSink, env: dict[str, str] | None = None) -> tuple[np.ndarray, str]:
    """Run `edge-ai ...` on `sink` while recording its monitor (16 kHz mono); (recording, stderr).
    parec writes to a file: a pipe left unread fills in 2 s and PulseAudio drops the rest."""
    env = {"PULSE_SINK": sink.name, **(env or {})}
    with tempfile.TemporaryFile() as raw:
        rec = subprocess.Popen(["parec", "-d", sink.monitor, "--rate=16000", "--channels=1", "--format=s16le",
                                "--latency-msec=20"], stdout=raw, stderr=subprocess.DEVNULL)
        try:
            result = edge_ai(*command, env=env)
        finally:
            rec.terminate()
            rec.wait(timeout=10)
        raw.seek(0)
        data = raw.read()
    assert result.returncode == 0, result.stderr
    return np.frombuffer(data[:len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0, result.stderr


def speech_seconds(samples: np.ndarray, rate: int = 16000) -> float:
    """Seconds of 20 ms frames louder than silence (-50 dBFS)."""
    frame = rate // 50
    frames = samples[:len(samples) // frame * frame].reshape(-1, frame)
    return float(np.sum(np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (-50 / 20))) * 0.02


def test_say_plays_on_the_default_speaker(speaker: NullSink, tmp_path: Path):
    text = "Hello from the speaker. This is a second sentence, so the reply is chunked and streamed."
    reference = tmp_path / "ref.wav"
    assert edge_ai("say", text, "-o", str(reference)).returncode == 0
    expected, rate = read_wav(reference)
    recording, _ = record_while(["say", text], speaker)
    assert np.sqrt(np.mean(recording**2)) > 0.01  # audio reached the sink
    played = speech_seconds(recording)
    assert 0.8 * speech_seconds(to_16k(expected, rate)) < played < speech_seconds(to_16k(expected, rate)) + 0.5
    assert word_recall(text, words_heard(recording, 16000)) >= 0.8


def test_say_on_a_named_device(speaker: NullSink):
    recording, _ = record_while(["say", "Named device."], speaker, env={"EDGE_AI_VOICE_OUTPUT_DEVICE": "pulse"})
    assert np.sqrt(np.mean(recording**2)) > 0.01


def test_unknown_output_device_lists_the_devices(room):
    result = edge_ai("say", "hello", env={"EDGE_AI_VOICE_OUTPUT_DEVICE": "no-such-speaker"})
    assert result.returncode == 1
    assert "no speaker named like 'no-such-speaker'" in result.stderr and "voice.output_device" in result.stderr
    assert "-o out.wav" in result.stderr


def test_no_audio_device_suggests_a_file():
    """PortAudio finds no server and no card: one line that says to write a file instead."""
    result = edge_ai("say", "hello", env={"PULSE_SERVER": "unix:/nonexistent/pulse"})
    assert result.returncode == 1, result.stderr
    assert "-o out.wav" in result.stderr and "Traceback" not in result.stderr


def test_output_device_helper_rejects_a_bad_index(room):
    from runtime.audio.speak import output_device

    with pytest.raises(EdgeAIError, match="no speaker with index 999.*-o out.wav"):
        output_device("999")


def test_device_blocks_resample_chunks_as_one_continuous_signal():
    import soxr

    from runtime.audio.speak import device_blocks

    rate, stream_rate = 22050, 48000
    tone = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32) * 0.5
    cuts = [0, 1000, 1003, 7000, 15000, rate]
    chunks = [tone[a:b] for a, b in zip(cuts, cuts[1:])]
    blocks = list(device_blocks(chunks, rate, stream_rate, channels=2))
    out = np.concatenate(blocks)
    assert out.shape[1] == 2 and np.array_equal(out[:, 0], out[:, 1])
    whole = soxr.resample(tone, rate, stream_rate)
    assert abs(len(out) - len(whole)) <= 2
    n = min(len(out), len(whole))
    np.testing.assert_allclose(out[:n, 0], whole[:n], atol=2e-3)  # no clicks where the chunks were joined


def test_synthesis_runs_ahead_in_order_and_passes_errors_on():
    from runtime.audio.speak import synthesize_ahead
    from runtime.audio.tts import EspeakTTS

    tts = EspeakTTS()
    chunks = ["First chunk.", "Second one, a bit longer.", "Third."]
    got = list(synthesize_ahead(tts, chunks))
    assert [len(a) for a in got] == [len(tts.synthesize(c)) for c in chunks]

    def failing():
        yield "Fine."
        raise EdgeAIError("the reply was cut")

    audio = synthesize_ahead(tts, failing())
    assert len(next(audio)) > 0
    with pytest.raises(EdgeAIError, match="the reply was cut"):
        next(audio)


def test_a_format_that_cannot_take_the_audio_is_a_clear_error(tmp_path: Path):
    """MP3 has no 96 kHz: libsndfile refuses, and nothing is left behind (a libsndfile without MP3 fails here too)."""
    from runtime.audio.speak import write_audio

    out = tmp_path / "out" / "loud.mp3"
    with pytest.raises(EdgeAIError, match=r"cannot write loud.mp3: libsndfile says .*sample rates.*try a .wav"):
        write_audio(out, [np.zeros(4800, dtype=np.float32)], 96_000)
    assert list(out.parent.iterdir()) == []

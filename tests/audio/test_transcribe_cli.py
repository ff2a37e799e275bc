"""`edge-ai transcribe` as a user runs it (subprocess), and a 20-minute file transcribed window by window
with bounded memory."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile

from convert.onnx.speech import long_recording, speak, wer_set, word_errors
from runtime.audio.audio_file import read_audio_blocks
from runtime.audio.long_audio import LongTranscription, _split_at_pauses
from runtime.audio.silence_cut import PAD
from runtime.audio.stt import FasterWhisperSTT, Segment, Word
from runtime.audio.whisper_model import whisper_base

TWO = [wer_set()[i] for i in (0, 4)]  # both en-us: the CLI decodes with the sampled fallback, keep it easy
SRT_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)$")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return whisper_base(tmp_path_factory.mktemp("whisper") / "base")


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sentences with a second of silence between, as a 44.1 kHz stereo 16-bit WAV."""
    pause = np.zeros(16000, dtype=np.float32)
    mono = np.concatenate([pause, speak(*TWO[0]), pause, speak(*TWO[1]), pause])
    up = np.interp(np.arange(int(len(mono) * 44100 / 16000)) * 16000 / 44100, np.arange(len(mono)), mono)
    path = tmp_path_factory.mktemp("talk") / "talk.wav"
    soundfile.write(path, np.stack([up, up], axis=1), 44100, subtype="PCM_16")
    return path


def edge_ai(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], capture_output=True, timeout=600,
                          input=stdin if stdin is not None else b"", env=os.environ.copy())


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@pytest.mark.parametrize("beam", [[], ["--beam-size", "5"]])
def test_plain_text_on_stdout(talk: Path, model: Path, beam: list[str]) -> None:
    result = edge_ai("transcribe", str(talk), "--model", str(model), *beam)
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    reference = " ".join(t for t, _ in TWO)
    errors, words = word_errors(reference, text)
    assert errors / words <= 0.15, text
    assert result.stderr == b""  # nothing but the transcript, for a pipe


def test_stdin_and_srt(talk: Path, model: Path) -> None:
    result = edge_ai("transcribe", "-", "--format", "srt", "--model", str(model), stdin=talk.read_bytes())
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.decode().strip().split("\n\n")
    assert len(blocks) >= 2
    previous_end = 0.0
    for index, block in enumerate(blocks, 1):
        number, times, *text = block.split("\n")
        assert number == str(index) and text and text[0].strip()
        match = SRT_TIME.match(times)
        assert match, times
        start, end = _seconds(*match.groups()[:4]), _seconds(*match.groups()[4:])
        assert previous_end - 0.01 <= start <= end <= soundfile.info(str(talk)).duration + 0.01
        previous_end = end
    second = 2.0 + len(speak(*TWO[0])) / 16000  # pause, first sentence, pause
    last_start = _seconds(*SRT_TIME.match(blocks[-1].split("\n")[1]).groups()[:4])
    assert second - 1.0 <= last_start <= second + 1.0  # the second sentence where it is in the file


def test_json_and_vtt_written_atomically(talk: Path, model: Path, tmp_path: Path) -> None:
    """The output's suffix names the format unless --format does."""
    out = tmp_path / "out" / "talk.json"
    result = edge_ai("transcribe", str(talk), "-o", str(out), "--model", str(model))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"" and b"saved" in result.stderr
    data = json.loads(out.read_text())
    assert data["language"] == "en" and data["duration"] == pytest.approx(soundfile.info(str(talk)).duration, abs=0.01)
    assert data["segments"] and all(s["start"] <= s["end"] for s in data["segments"])
    assert all(s["start"] <= w["start"] <= w["end"] <= s["end"] + 0.01 for s in data["segments"] for w in s["words"])
    assert word_errors(" ".join(t for t, _ in TWO), data["text"])[0] <= 3
    assert [p.name for p in out.parent.iterdir()] == ["talk.json"]  # no temp file left
    text = tmp_path / "out" / "talk.vtt"
    assert edge_ai("transcribe", str(talk), "-f", "text", "-o", str(text), "--model", str(model)).returncode == 0
    assert "-->" not in text.read_text() and word_errors(" ".join(t for t, _ in TWO), text.read_text())[0] <= 3
    vtt = edge_ai("transcribe", str(talk), "-f", "vtt", "--model", str(model)).stdout.decode()
    assert vtt.startswith("WEBVTT\n\n") and re.search(r"\n?\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d\n", vtt)


def test_sentences_after_long_silences_are_all_heard_once_at_their_times(tmp_path: Path, model: Path) -> None:
    """Whisper alone, on 30-s windows mostly of hiss, left the second sentence out (run to run), dated the
    third from its window's start (18 s early) and heard the last word twice: the silences are cut first."""
    rng = np.random.default_rng(3)

    def hiss(seconds: float, db: float) -> np.ndarray:
        return rng.normal(0, 10 ** (db / 20), int(seconds * 16000)).astype(np.float32)

    said = ["The meeting will start in a few minutes.", "Please check the budget numbers.",
            "Thank you, that is all for today.", "Yes."]
    speech = [speak(text) for text in said]
    parts = [hiss(2, -70), speech[0], hiss(27, -70), speech[1], hiss(45, -60), speech[2], hiss(29, -70), speech[3],
             hiss(3, -70)]
    starts = np.cumsum([0] + [len(p) for p in parts])[1::2] / 16000
    path = tmp_path / "gaps.wav"
    soundfile.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    result = edge_ai("transcribe", str(path), "-f", "json", "--model", str(model))
    assert result.returncode == 0, result.stderr
    segments = json.loads(result.stdout)["segments"]
    assert len(segments) == len(said), segments
    for segment, text, start in zip(segments, said, starts):
        assert word_errors(text, segment["text"])[0] <= 1, segments
        assert start - 0.5 <= segment["start"] <= start + 0.6, (start, segments)  # Whisper's word times: +-0.4 s
    # --no-vad decodes the windows as they are (the words are still there, the times are Whisper's)
    result = edge_ai("transcribe", str(path), "--no-vad", "--model", str(model))
    assert result.returncode == 0 and "meeting" in result.stdout.decode(), result.stderr


def test_a_segment_is_split_where_its_words_pause() -> None:
    words = (Word(" Set", 10.0, 10.3), Word(" a", 10.3, 10.4), Word(" timer.", 10.4, 10.9), Word(" What", 31.2, 31.5),
             Word(" time?", 31.5, 32.0), Word(" Now.", 32.9, 33.2))
    pieces = _split_at_pauses(Segment(10.0, 33.2, "Set a timer. What time? Now.", words))
    assert [(p.start, p.end, p.text) for p in pieces] == [(10.0, 10.9, "Set a timer."), (31.2, 33.2, "What time? Now.")]
    assert [len(p.words) for p in pieces] == [3, 3]
    untimed = Segment(0.0, 5.0, "No word times.", ())
    assert _split_at_pauses(untimed) == [untimed]


def test_progress_is_drawn_on_a_terminal_only(talk: Path, model: Path, tmp_path: Path) -> None:
    """With -o, a terminal's stderr shows how many seconds of the file are done; a pipe gets only the summary."""
    import pty

    leader, follower = pty.openpty()
    out = tmp_path / "talk.txt"
    with os.fdopen(leader, "rb", buffering=0) as terminal:
        process = subprocess.Popen([sys.executable, "-m", "edge_ai", "transcribe", str(talk), "-o", str(out),
                                    "--model", str(model)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=follower, env={**os.environ, "TERM": "xterm", "COLUMNS": "100"})
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = terminal.read(4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=600) == 0
    total = round(soundfile.info(str(talk)).duration)
    assert b"transcribing (seconds of audio)" in shown and f"/{total}".encode() in shown, shown[-400:]
    assert out.read_text().strip()
    piped = edge_ai("transcribe", str(talk), "-o", str(tmp_path / "again.txt"), "--model", str(model))
    assert piped.returncode == 0 and piped.stderr.decode().startswith("saved ") and b"transcribing" not in piped.stderr


def test_silent_file_is_an_empty_transcript(tmp_path: Path, model: Path) -> None:
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(16000 * 5, dtype=np.float32), 16000, subtype="FLOAT")
    result = edge_ai("transcribe", str(path), "--model", str(model))
    assert result.returncode == 0 and result.stdout == b"", result.stderr


@pytest.mark.parametrize(("content", "message", "code"), [
    (b"", "is empty", 1),
    (b"plain text, not a recording\n" * 10, "not an audio file", 1),
    (None, "does not exist", 3),
])
def test_bad_input_is_one_error_line_and_no_output_file(tmp_path: Path, model: Path, content: bytes | None,
                                                         message: str, code: int) -> None:
    path = tmp_path / "in.wav"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out.txt"
    result = edge_ai("transcribe", str(path), "-o", str(out), "--model", str(model))
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == code and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()


def test_bad_options(talk: Path) -> None:
    result = edge_ai("transcribe", str(talk), "--format", "docx")
    assert result.returncode == 1 and "--format 'docx' is not one of" in result.stderr.decode()
    result = edge_ai("transcribe", str(talk), "--backend", "nemo")
    assert result.returncode == 1 and b"voice.stt_backend" in result.stderr
    result = edge_ai("transcribe", str(talk), "--beam-size", "0")
    assert result.returncode == 2 and b"--beam-size" in result.stderr


@pytest.mark.parametrize("cut_silence", [True, False])
def test_a_long_file_is_transcribed_window_by_window_in_bounded_memory(tmp_path: Path, model: Path,
                                                                       cut_silence: bool) -> None:
    """20 minutes, mostly silence, with sentences at known times. Uncut (--no-vad), one straddles the 30 s
    window edge, so the held-back segment logic must decode it whole, and Whisper may date a sentence from
    its window's start; cut, each is where it was said. Traced memory does not grow with the length read."""
    rate, minutes = 16000, 20
    placed = {28.5: wer_set()[0], 300.0: wer_set()[9], 1190.0: wer_set()[4]}
    speech = {at: speak(text, voice) for at, (text, voice) in placed.items()}
    path = tmp_path / "long.wav"
    with soundfile.SoundFile(path, "w", rate, 1, subtype="PCM_16") as out:
        for start in range(0, minutes * 60, 10):  # written 10 s at a time
            chunk = np.zeros(rate * 10, dtype=np.float32)
            for at, samples in speech.items():
                offset = int((at - start) * rate)
                lo, hi = max(offset, 0), min(offset + len(samples), len(chunk))
                if lo < hi:
                    chunk[lo:hi] = samples[lo - offset:hi - offset]
            out.write(chunk)
    stt = FasterWhisperSTT(model, beam_size=1)  # as the CLI runs: greedy, the fallback retries a looping window
    job = LongTranscription(stt, read_audio_blocks(path), cut_silence=cut_silence)
    segments, peaks = [], []
    tracemalloc.start()
    try:
        for segment in job:  # the peak of the first 5 minutes, then of the 15 after: no growth with length
            if segment.start >= 250 and not peaks:
                peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.reset_peak()
            segments.append(segment)
        peaks.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    # one window's decode (faster-whisper's STFT of 30 s) is most of it; the file as one array would be 77 MB
    assert max(peaks) < 48 * 1024 * 1024 and peaks[1] < peaks[0] * 1.2 + (1 << 20), peaks
    assert job.duration == pytest.approx(minutes * 60, abs=0.01)
    for at, (text, _voice) in placed.items():
        early = PAD + 0.1 if cut_silence else 30  # without word times a segment may start where its clip does
        near = " ".join(s.text for s in segments if at - early <= s.start <= at + len(speech[at]) / rate)
        errors, words = word_errors(text, near)
        assert errors <= max(1, words // 5), (at, [(round(s.start, 1), s.text) for s in segments])
    starts = [s.start for s in segments]
    assert starts == sorted(starts)


def test_a_phrase_written_into_a_fraction_of_a_second_is_left_out(model: Path) -> None:
    """At a window's end Whisper now and then writes what it did not hear into a fraction of a second: with a
    beam of 5, "No, it's going to rain." (5 words) in 0.14 s of hiss, in bench_transcribe's recording (seed 0,
    its first 18 sentences, on an AVX2 EPYC; the int8 kernels of another CPU decode that window otherwise), and
    elsewhere its prompt again; and what it wrote becomes the next window's prompt. Here Whisper decodes the
    recording and that mistake is added to each of its windows, dated in the window's last 0.14 s: it is left
    out of the transcript and of every later prompt, as the streaming transcriber leaves out a decode that
    loops or copies its prompt; what Whisper heard is kept."""
    audio, _ = long_recording(18, seed=0)
    stt = FasterWhisperSTT(model)
    made_up = "No, it's going to rain."
    prompts: list[str] = []
    transcribe = stt.transcribe

    def with_the_mistake(clip, *, prompt="", word_timestamps=False):
        prompts.append(prompt)
        result = transcribe(clip, prompt=prompt, word_timestamps=word_timestamps)
        end = len(clip) / 16000
        words = tuple(Word(" " + w, end - 0.14 + 0.028 * k, end - 0.14 + 0.028 * (k + 1))
                      for k, w in enumerate(made_up.split()))
        written = Segment(end - 0.14, end, made_up, words if word_timestamps else ())
        return dataclasses.replace(result, segments=(*result.segments, written),
                                   text=" ".join(s.text for s in (*result.segments, written)))

    stt.transcribe = with_the_mistake
    blocks = (audio[i:i + 16000] for i in range(0, len(audio), 16000))
    kept = " ".join(s.text for s in LongTranscription(stt, blocks, word_timestamps=True))
    assert len(prompts) >= 2 and made_up not in kept and not any(made_up in p for p in prompts), (prompts, kept)
    assert word_errors(" ".join(text for text, _ in long_recording(18, seed=0)[1]), kept)[0] < 60, kept

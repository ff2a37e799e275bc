"""`edge-ai transcribe FILE|-`: speech in an audio file to text, offline.

    edge-ai transcribe talk.wav                 # the transcript on stdout, a line per segment
    cat talk.flac | edge-ai transcribe - | wc -w
    edge-ai transcribe talk.wav -o talk.srt     # the format from the suffix (.srt .vtt .json), or --format

Thin: runtime.audio reads the file as a stream of 16 kHz blocks, cuts its long silences and decodes
it window by window, so a long recording uses bounded memory and text, srt and vtt segments appear as
they are decoded (json, one document with word times, comes at the end). Timed formats ask for word
timestamps, which end segments where the words end. With -o the output is written to a temp file
renamed into place at the end, so a failure never leaves a half-written transcript.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Annotated, Any, Optional

import typer

from edge_ai import config as config_mod
from edge_ai.console import ProgressBar, err
from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_path

FORMATS = ("text", "srt", "vtt", "json")


def _clock(seconds: float, separator: str) -> str:
    """HH:MM:SS,mmm (srt) or HH:MM:SS.mmm (vtt)."""
    ms = max(0, round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def write_transcript(job: Iterable, fmt: str, sink: IO[str],  # job: runtime.audio.long_audio.LongTranscription
                     on_segment: Callable[[Any], None] = lambda segment: None) -> int:
    """Write `job`'s segments to `sink` in `fmt` as they come; returns the number of segments."""
    segments = []
    if fmt == "vtt":
        sink.write("WEBVTT\n\n")
    for index, segment in enumerate(job, 1):
        if fmt == "text":
            sink.write(segment.text + "\n")
        elif fmt in ("srt", "vtt"):
            number = f"{index}\n" if fmt == "srt" else ""
            separator = "," if fmt == "srt" else "."
            sink.write(f"{number}{_clock(segment.start, separator)} --> {_clock(segment.end, separator)}\n"
                       f"{segment.text}\n\n")
        segments.append(segment)
        sink.flush()
        on_segment(segment)
    if fmt == "json":
        json.dump({"text": " ".join(s.text for s in segments), "language": job.language,
                   "duration": round(job.duration, 3),
                   "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                                 "words": [{"text": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                                           for w in s.words]} for s in segments]},
                  sink, ensure_ascii=False, indent=2)
        sink.write("\n")
    return len(segments)


def transcribe_cmd(
    file: Annotated[str, typer.Argument(help="audio file (WAV, FLAC, OGG, MP3, M4A, WebM, a video's sound; any rate "
                                            "and channels), or - for stdin")],
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="text (plain transcript), srt, vtt or json; "
                                               "default: -o's suffix, else text")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write to this file instead of stdout")] = None,
    language: Annotated[Optional[str], typer.Option(
        "--language", "-l", help="language code (en, de...) or auto; default voice.language")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="faster-whisper, whisper or onnx; "
                                                   "default voice.stt_backend")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="model folder or file for the backend; "
                                                 "default voice.stt_model (the packaged Whisper base)")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (0 = physical cores)")] = None,
    vad: Annotated[bool, typer.Option("--vad/--no-vad", help="cut silences of 2 s or more (Silero VAD) before "
                                      "Whisper, which hallucinates in them; --no-vad decodes everything (music, "
                                      "speech the VAD misses)")] = True,
    beam_size: Annotated[int, typer.Option("--beam-size", min=1, max=10, help="hypotheses kept while decoding; 1 "
                                           "(greedy) by default: on long recordings a beam of 5 was no more "
                                           "accurate and took up to twice as long")] = 1,
) -> None:
    """Transcribe speech in FILE (or stdin) to text, offline; long files stream with bounded memory."""
    import itertools

    from runtime.audio.audio_file import read_audio_blocks
    from runtime.audio.long_audio import LongTranscription
    from runtime.audio.stt import open_stt

    if fmt is None:  # `-o talk.srt` means subtitles, not plain text under an .srt name
        suffix = output.suffix.lower().lstrip(".") if output is not None else ""
        fmt = suffix if suffix in FORMATS else "text"
    if fmt not in FORMATS:
        raise EdgeAIError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    flags = {"voice.language": language, "voice.stt_backend": backend, "voice.stt_model": model,
             "model.threads": threads}
    cfg = config_mod.load({k: v for k, v in flags.items() if v is not None})
    blocks = read_audio_blocks(Path(file))
    first = next(blocks, None)  # a missing, empty or non-audio file fails now, before the model loads
    stt = open_stt(cfg, beam_size=beam_size)
    job = LongTranscription(stt, itertools.chain([first] if first is not None else [], blocks),
                            word_timestamps=fmt != "text", cut_silence=vad)  # subtitles: times that follow the words
    total = _seconds_of(Path(file)) if file != "-" else None
    shown = output is not None or not sys.stdout.isatty()  # else the segments on the terminal show how far it got
    with ProgressBar("transcribing (seconds of audio)") as update:  # drawn on a terminal's stderr only
        def progress(segment: Any) -> None:
            if shown:
                update(int(segment.end), total)

        if output is None:
            write_transcript(job, fmt, sys.stdout, progress)
            return
        with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8") as sink:
            count = write_transcript(job, fmt, sink, progress)
    err.print(f"saved {output} ({count} segments, {job.duration:.1f} s of audio)")


def _seconds_of(path: Path) -> int | None:
    """The audio's length for the progress bar, if libsndfile can tell it without decoding (else None)."""
    import soundfile

    try:
        return round(soundfile.info(str(path)).duration)
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return None


def register(app: typer.Typer) -> None:
    """Add `transcribe` to the main `edge-ai` app."""
    app.command("transcribe")(transcribe_cmd)

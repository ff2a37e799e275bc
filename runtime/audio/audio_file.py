"""Audio files as a stream of float32 mono 16 kHz blocks, whatever their format, with bounded memory.

    for block in read_audio_blocks(Path("talk.flac")):     # or Path("-") for stdin
        ...                                                # float32 mono 16 kHz, ~BLOCK_SECONDS each

libsndfile (through soundfile) reads WAV at any rate and width (8-bit unsigned, 16/24/32-bit int,
32/64-bit float), FLAC, OGG/Vorbis/Opus and MP3. What it does not know (an M4A voice memo, AAC,
WebM/Opus, the sound of an MP4 or MKV video, WMA...) is decoded by FFmpeg through PyAV, which
faster-whisper already brings for its own file reader; random bytes and text are refused by both.
Each block is down-mixed to mono (mean of the channels) and resampled by one `soxr.ResampleStream`,
which keeps its filter state between blocks, so the output equals resampling the whole file at once
while memory stays at one block however long the file is (FFmpeg decodes packet by packet). Standard
input is not seekable and libsndfile seeks to parse headers, so it is spooled to a temporary file
first (in memory up to a few MiB, on disk beyond).

A file that is empty, not audio, or damaged is an `EdgeAIError` naming it and what to do; a silent
file is not an error (it reads as silence, and transcribes to no words).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from edge_ai.errors import EdgeAIError, NotFoundError

SAMPLE_RATE = 16000  # what the speech models take
BLOCK_SECONDS = 5.0  # read this much of the source at a time: memory per block, whatever the file's length
STDIN = Path("-")
_SPOOL_IN_MEMORY = 8 << 20  # bytes of piped audio kept in memory before spooling to disk
_FORMATS = "WAV, FLAC, OGG, MP3, M4A or WebM"


def read_audio_blocks(path: Path, *, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """float32 mono 16 kHz blocks of the audio file at `path` (`-` for stdin), in order, as they are read.

    Errors surface at the first `next()`: the file is opened lazily, like any generator."""
    import soundfile
    import soxr

    with _opened(path) as (source, name):
        try:
            audio = soundfile.SoundFile(source)
        except soundfile.LibsndfileError as exc:
            source.seek(0)
            yield from _ffmpeg_blocks(source, name, block_seconds, _reason(exc))
            return
        with audio:
            if audio.samplerate <= 0 or audio.channels <= 0:
                raise EdgeAIError(f"{name} declares {audio.samplerate} Hz and {audio.channels} channels; "
                                  f"the file is damaged: export it again as {_FORMATS}")
            resampler = soxr.ResampleStream(audio.samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            frames = max(1, int(block_seconds * audio.samplerate))
            read_any = False
            try:
                for block in audio.blocks(blocksize=frames, dtype="float32", always_2d=True):
                    read_any = read_any or len(block) > 0
                    out = resampler.resample_chunk(block.mean(axis=1), last=False)
                    if len(out):
                        yield out
            except soundfile.LibsndfileError as exc:
                raise EdgeAIError(f"{name} is damaged partway ({_reason(exc)}); export it again as "
                                  f"{_FORMATS}") from None
            if not read_any:
                raise EdgeAIError(f"{name} has no audio samples (a header without sound); "
                                  "record or export it again")
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if len(tail):
                yield tail


def _ffmpeg_blocks(source: IO[bytes], name: str, block_seconds: float, libsndfile_says: str) -> Iterator[np.ndarray]:
    """The first sound track of a file libsndfile cannot read, decoded by FFmpeg (PyAV) frame by frame, in
    blocks of about `block_seconds` at 16 kHz mono."""
    import av
    import soxr

    try:
        container = av.open(source, mode="r")  # (a spooled stdin is opened "w+b": PyAV would guess writing)
    except av.FFmpegError:
        raise EdgeAIError(f"{name} is not an audio file edge-ai can read ({libsndfile_says}); "
                          f"give a {_FORMATS} file") from None
    with container:
        tracks = container.streams.audio
        rate = tracks[0].codec_context.sample_rate if tracks else 0
        if rate <= 0:
            raise EdgeAIError(f"{name} is not an audio file edge-ai can read (it has no sound track: "
                              f"{container.format.long_name}); give a {_FORMATS} file")
        to_float = av.AudioResampler(format="fltp", rate=rate)  # planar float at one rate, channels kept
        resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        pending: list[np.ndarray] = []
        size, block, read_any = 0, int(block_seconds * SAMPLE_RATE), False
        try:
            for frame in container.decode(tracks[0]):
                for planar in to_float.resample(frame):
                    read_any = True
                    out = resampler.resample_chunk(planar.to_ndarray().mean(axis=0).astype(np.float32), last=False)
                    pending.append(out)
                    size += len(out)
                    if size >= block:
                        yield np.concatenate(pending)
                        pending, size = [], 0
        except av.FFmpegError as exc:
            raise EdgeAIError(f"{name} is damaged partway ({exc.strerror or exc}); export it again as "
                              f"{_FORMATS}") from None
        if not read_any:
            raise EdgeAIError(f"{name} has no audio samples (a header without sound); record or export it again")
        pending.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        tail = np.concatenate(pending)
        if len(tail):
            yield tail


def read_audio(path: Path) -> np.ndarray:
    """The whole file as one float32 mono 16 kHz array (for clips; stream long files with `read_audio_blocks`)."""
    blocks = list(read_audio_blocks(path))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


@contextmanager
def _opened(path: Path) -> Iterator[tuple[IO[bytes], str]]:
    """A seekable binary file for `path` (stdin spooled) and the name to show in errors."""
    if path == STDIN:
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, prefix="edge-ai-stdin-") as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
            if spool.tell() == 0:
                raise EdgeAIError("standard input is empty; pipe audio into it (e.g. `cat talk.wav | "
                                  "edge-ai transcribe -`)")
            spool.seek(0)
            yield spool, "standard input"
        return
    if path.is_dir():
        raise EdgeAIError(f"{path} is a folder; give an audio file")
    try:
        source = path.open("rb")
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist; check the path") from None
    except OSError as exc:
        raise EdgeAIError(f"cannot read {path}: {exc.strerror}") from None
    with source:
        if path.stat().st_size == 0:
            raise EdgeAIError(f"{path} is empty (0 bytes); record or export the audio again")
        yield source, str(path)


def _reason(exc: Exception) -> str:
    """libsndfile's own words, lower-cased and without the file name soundfile prefixes."""
    message = str(getattr(exc, "error_string", "") or exc).strip().rstrip(".")
    return message[:1].lower() + message[1:] if message else "unreadable"

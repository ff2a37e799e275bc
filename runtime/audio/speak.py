"""Say text: chunks synthesised ahead in a thread while earlier ones play, or written to a WAV file.

    audio = synthesize_ahead(tts, chunks)          # an iterator of float32 arrays, one per chunk
    play(audio, tts.sample_rate, device="")        # the default speaker, or a name/index
    write_audio(path, audio, tts.sample_rate)      # .wav/.flac (16-bit), .ogg (Vorbis) or .mp3, atomically

Synthesis runs one chunk ahead of playback (a bounded queue), so a long text starts playing after
its first chunk is made and never waits between chunks. A speaker that does not take the voice's
rate gets the audio resampled (soxr, streaming: no clicks at chunk joins) to its own rate.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_path
from runtime.audio.devices import Device, pick_device, portaudio
from runtime.audio.tts import TextToSpeech

_AHEAD = 2  # chunks synthesised before they are needed


def synthesize_ahead(tts: TextToSpeech, chunks: Iterable[str]) -> Iterator[np.ndarray]:
    """Audio for each chunk, made in a worker thread up to `_AHEAD` chunks before it is consumed."""
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_AHEAD)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        """Queue `item` unless the consumer has gone; returns whether it was queued."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for chunk in chunks:
                if not put(("audio", tts.synthesize(chunk))):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            put(("error", exc))

    worker = threading.Thread(target=work, name="tts-synthesis", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


# the file name's suffix -> libsndfile's (format, subtype); writing MP3 needs libsndfile 1.1 (soundfile's wheels)
AUDIO_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
                 ".mp3": ("MP3", "MPEG_LAYER_III")}


def audio_format(path: Path) -> tuple[str, str]:
    """The (format, subtype) `path`'s suffix asks for; an unknown suffix is an error before anything is made,
    rather than WAV data under an .mp3 name."""
    try:
        return AUDIO_FORMATS[path.suffix.lower()]
    except KeyError:
        names = ", ".join(AUDIO_FORMATS)
        raise EdgeAIError(f"cannot write {path.name}: the file name says no audio format edge-ai writes; "
                          f"end it in {names}") from None


def write_audio(path: Path, audio: Iterable[np.ndarray], rate: int) -> float:
    """Write mono audio to `path` in the format its suffix names, atomically; returns the seconds written."""
    import soundfile

    file_format, subtype = audio_format(path)
    frames = 0
    try:
        with atomic_path(path) as tmp, soundfile.SoundFile(tmp, "w", rate, 1, subtype, format=file_format) as out:
            for samples in audio:
                out.write(np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False))
                frames += len(samples)
    except soundfile.LibsndfileError as exc:  # a rate the codec lacks; a libsndfile built without MP3
        raise EdgeAIError(f"cannot write {path.name}: libsndfile says {exc.error_string.strip()!r}; "
                          "try a .wav name") from None
    return frames / rate


def output_device(spec: str) -> Device:
    """The speaker voice.output_device names ("" = the default, an index, or part of a name), with the
    way out for `say` when there is none: write a file."""
    try:
        return pick_device(spec, "output")
    except EdgeAIError as exc:
        setting = f" (voice.output_device is {spec!r})" if spec else ""
        raise EdgeAIError(f"{exc}{setting}; or write a file with -o out.wav") from None


def _open_stream(sd: Any, device: int | None, rate: int) -> tuple[Any, int, int]:
    """An output stream at the voice's rate if the device takes it, else at the device's own rate."""
    info = sd.query_devices(device, "output")
    for channels in (1, 2):
        if channels > info["max_output_channels"]:
            break
        for stream_rate in (rate, int(info["default_samplerate"])):
            try:
                sd.check_output_settings(device=device, channels=channels, dtype="float32", samplerate=stream_rate)
            except (sd.PortAudioError, ValueError):
                continue
            stream = sd.OutputStream(samplerate=stream_rate, channels=channels, dtype="float32", device=device)
            return stream, stream_rate, channels
    raise EdgeAIError(f"audio output device {info['name']!r} takes neither {rate} Hz nor its own rate; choose "
                      "another voice.output_device or write a file with -o out.wav")


def play(audio: Iterable[np.ndarray], rate: int, device: str = "") -> float:
    """Play mono float32 chunks at `rate` on a speaker; returns the seconds played, once they have been heard."""
    speaker = output_device(device)
    sd = portaudio()
    try:
        stream, stream_rate, channels = _open_stream(sd, speaker.index, rate)
    except sd.PortAudioError as exc:
        raise EdgeAIError(f"cannot open the audio output ({exc}); write a file with -o out.wav") from None
    played = 0.0
    try:
        with stream:
            for block in device_blocks(audio, rate, stream_rate, channels):
                stream.write(block)
                played += len(block) / stream_rate
            stream.stop()  # returns once every buffered frame has played
    except sd.PortAudioError as exc:  # the device went away (unplugged headset, sound server restarted)
        raise EdgeAIError(f"the audio output stopped after {played:.1f} s ({exc}); check the speaker or write a "
                          "file with -o out.wav") from None
    return played


def device_blocks(audio: Iterable[np.ndarray], rate: int, stream_rate: int, channels: int) -> Iterator[np.ndarray]:
    """Mono chunks at `rate` as a stream at `stream_rate` with `channels` takes them: resampled by one
    streaming resampler (chunk joins stay continuous) and copied to each channel."""
    resampler = None
    if stream_rate != rate:
        import soxr

        resampler = soxr.ResampleStream(rate, stream_rate, 1, dtype="float32")
    for samples in audio:
        samples = samples.astype(np.float32)
        if resampler is not None:
            samples = resampler.resample_chunk(samples)
        if len(samples):
            yield np.repeat(samples[:, None], channels, axis=1)
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield np.repeat(tail[:, None], channels, axis=1)

"""`edge-ai say TEXT [-o out.wav]`: speak text (markdown read sensibly) on the speaker or into an audio file.

Thin: reads the text (argument, or stdin with `-` or when piped), cuts it into speakable chunks
(runtime.audio.speakable), synthesises them with the configured voice (runtime.audio.tts) one
chunk ahead of playback (runtime.audio.speak).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_ai import config as config_mod
from edge_ai.console import err
from edge_ai.errors import EdgeAIError


def _text(text: str | None) -> str:
    """The argument, or stdin for `-` or no argument with something piped in."""
    if text is not None and text != "-":
        return text
    if sys.stdin is None or (text is None and sys.stdin.isatty()):
        raise EdgeAIError("nothing to say; pass the text as an argument, or pipe it in (edge-ai say - < notes.md)")
    return sys.stdin.buffer.read().decode("utf-8", errors="replace")


def say_cmd(
    text: Annotated[Optional[str], typer.Argument(help="what to say (markdown is fine); '-' or omitted: read stdin")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write a .wav .flac .ogg or .mp3")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="espeak or piper (voice.tts_backend)")] = None,
    voice: Annotated[Optional[str], typer.Option("--voice", "-v", help="voice name (voice.tts_voice)")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="neural voice file, piper .onnx (voice.tts_model)")] = None,
    rate: Annotated[Optional[float], typer.Option("--rate", help="speaking speed, 1 = normal (voice.tts_rate)")] = None,
) -> None:
    """Say TEXT on the speaker (or write it to an audio file with -o)."""
    from runtime.audio.speak import audio_format, play, synthesize_ahead, write_audio
    from runtime.audio.speakable import SpeakableChunker
    from runtime.audio.tts import open_tts

    flags = {"voice.tts_backend": backend, "voice.tts_voice": voice, "voice.tts_model": model, "voice.tts_rate": rate}
    if output is not None:
        audio_format(output)  # a name no format fits is an error before the voice loads
    cfg = config_mod.load({k: v for k, v in flags.items() if v is not None})
    chunker = SpeakableChunker()
    chunks = chunker.feed(_text(text)) + chunker.flush()
    if not chunks:
        raise EdgeAIError("nothing to say: the text has no words")
    tts = open_tts(cfg)
    audio = synthesize_ahead(tts, chunks)
    if output is not None:
        seconds = write_audio(output.expanduser(), audio, tts.sample_rate)
        err.print(f"wrote {output} ({seconds:.1f} s, {tts.sample_rate} Hz, {tts.name})")
        return
    try:
        play(audio, tts.sample_rate, cfg.voice.output_device)
    except KeyboardInterrupt:
        err.print("[stopped]")
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    """Add `say` to the main `edge-ai` app."""
    app.command("say")(say_cmd)

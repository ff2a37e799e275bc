"""`edge-ai voice` (a spoken conversation, headless), `edge-ai listen` (live transcription from the microphone),
`edge-ai audio devices` and `edge-ai audio test` (measure the echo path, pick and save the duplex mode).

Thin: builds the config, opens runtime.audio's VoiceSession, prints its events. Final lines go to
stdout (a pipe gets the transcript); live partials go to stderr, and only on a terminal.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from edge_ai import config as config_mod
from edge_ai.console import err, out

audio_app = typer.Typer(help="Audio devices and the echo self-test.", no_args_is_help=True)

InputOpt = Annotated[Optional[str], typer.Option("--input", "-i", help="microphone: name (or part) or index")]
OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="speaker: name (or part) or index")]
ModeOpt = Annotated[Optional[str], typer.Option("--mode", help="full, half, headphones or auto")]
SecondsOpt = Annotated[Optional[float], typer.Option("--seconds", help="stop after this many seconds")]
EventsOpt = Annotated[bool, typer.Option("--events", help="print every event as a JSON line (for scripts)")]


def _config(**flags: Any) -> config_mod.Config:
    return config_mod.load({k: v for k, v in flags.items() if v is not None})


def _event_json(event: Any) -> str:
    data = {"event": type(event).__name__}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        data[f.name] = value.value if hasattr(value, "value") else value
    return json.dumps(data)


class _Printer:
    """Prints a conversation's events: final lines on stdout, the live partial on a terminal's stderr.

    The assistant's line is printed once its turn is over (spoken in full, or cut: then with what the
    listener heard), so the two sides never interleave.
    """

    def __init__(self, as_events: bool) -> None:
        self.as_events = as_events
        self.live = sys.stderr.isatty() and not as_events
        self._lock = threading.Lock()
        self._reply = ""

    def __call__(self, event: Any) -> None:
        from runtime.audio import events as ev

        with self._lock:
            if self.as_events:
                if not isinstance(event, ev.Level):
                    print(_event_json(event), flush=True)
                return
            if isinstance(event, ev.Partial) and self.live:
                err.file.write(f"\r\033[K… {event.confirmed} {event.tentative}".rstrip())
                err.file.flush()
            elif isinstance(event, ev.UserTurn):
                self._clear()
                print(f"you: {event.text}", flush=True)
            elif isinstance(event, ev.StopAsked):
                self._clear()
                print(f"you: {event.text} [asked to stop: not answered]", flush=True)
            elif isinstance(event, ev.ReplyText):
                self._reply = event.text
            elif isinstance(event, ev.Interrupted):
                print(f"assistant: {event.heard} [interrupted]", flush=True)
                self._reply = ""
            elif isinstance(event, ev.TurnReopened):
                print("  [you went on: that was not the whole turn]", flush=True)
                self._reply = ""
            elif isinstance(event, ev.StateChanged) and event.state is ev.VoiceState.LISTENING and self._reply:
                print(f"assistant: {self._reply.strip()}", flush=True)
                self._reply = ""
            elif isinstance(event, ev.TurnLatency):
                print(f"  latency: transcript {event.transcript:.2f} s, first token {event.first_token:.2f} s, "
                      f"first audio {event.first_audio:.2f} s", flush=True)
            elif isinstance(event, ev.Status):
                self._clear()
                err.print(event.message)

    def _clear(self) -> None:
        if self.live:
            err.file.write("\r\033[K")


def _run(session: Any, seconds: float | None, ready: str) -> None:
    """Start, say `ready` once the microphone's sound arrives (words said before would be lost), run until
    Ctrl+C or `seconds`."""
    session.start()
    try:
        if session.wait_for_microphone():
            err.print(ready)
        else:
            err.print(f"the microphone '{session.stream.mic.name}' has sent no sound yet; still trying (pick "
                      "another with --input-device; `edge-ai audio devices` lists them)")
        end = time.monotonic() + seconds if seconds else None
        while end is None or time.monotonic() < end:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()


def voice_cmd(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="model name or .gguf path")] = None,
    input_device: InputOpt = None, output_device: OutputOpt = None, mode: ModeOpt = None,
    seconds: SecondsOpt = None, events: EventsOpt = False,
) -> None:
    """Talk with the assistant hands-free: it listens, answers aloud, and stops when you cut in."""
    from edge_ai.cli.main import open_engine
    from runtime.audio.session import VoiceSession
    from runtime.llm.scheduler import Scheduler

    cfg = _config(**{"model.name": model, "voice.input_device": input_device,
                     "voice.output_device": output_device, "voice.mode": mode})
    _first_time_check(cfg)
    scheduler = Scheduler(open_engine(cfg), queue_size=2, name="voice")
    try:
        session = VoiceSession.open(cfg, scheduler, _Printer(events))
        _run(session, seconds, "listening — speak; Ctrl+C to stop")
    finally:
        scheduler.close()


def listen_cmd(input_device: InputOpt = None, seconds: SecondsOpt = None, events: EventsOpt = False) -> None:
    """Transcribe the microphone live: partial words as you speak, one line per finished sentence."""
    from runtime.audio.session import VoiceSession

    cfg = _config(**{"voice.input_device": input_device})
    session = VoiceSession.open(cfg, None, _Printer(events), reply=False)
    _run(session, seconds, "listening — Ctrl+C to stop")


def _first_time_check(cfg: config_mod.Config) -> None:
    from runtime.audio.session import first_time_check

    check = first_time_check(cfg, progress=err.print)
    if check is not None:
        err.print(f"mode: {check.recommended} ({check.reason})")


@audio_app.command("devices")
def devices_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List microphones and speakers (names and indexes for voice.input_device / voice.output_device)."""
    from runtime.audio.devices import list_devices

    devices = list_devices()
    if as_json:
        print(json.dumps([dataclasses.asdict(d) for d in devices], indent=2))
        return
    table = Table("index", "name", "api", "in", "out", "rate", "default")
    for d in devices:
        default = ", ".join(k for k, v in (("input", d.default_input), ("output", d.default_output)) if v)
        table.add_row(str(d.index), d.name, d.host_api, str(d.inputs), str(d.outputs), f"{d.sample_rate:.0f}", default)
    out.print(table)


@audio_app.command("test")
def test_cmd(input_device: InputOpt = None, output_device: OutputOpt = None,
             save: Annotated[bool, typer.Option("--save/--no-save", help="save the recommended mode")] = True,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Play the assistant's voice, record it back, measure echo delay, cancellation and false triggers."""
    from runtime.audio.selftest import run_audio_test
    from runtime.audio.session import save_audio_check

    cfg = _config(**{"voice.input_device": input_device, "voice.output_device": output_device})
    check = run_audio_test(cfg, progress=lambda message: None if as_json else err.print(message))
    if save:
        save_audio_check(check.as_dict())
    if as_json:
        print(json.dumps(check.as_dict(), indent=2))
        return
    table = Table("measure", "value")
    table.add_row("microphone / speaker", f"{check.microphone} / {check.speaker} ({check.sample_rate} Hz)")
    table.add_row("echo delay", f"{check.delay_ms:.0f} ms")
    table.add_row("echo level", f"{check.echo_db:.1f} dB")
    table.add_row("echo cancellation (ERLE)", "unavailable" if check.erle_db is None else f"{check.erle_db:.1f} dB")
    table.add_row("VAD on own voice, raw", f"{check.vad_false_rate_raw:.1%} of frames")
    table.add_row("VAD on own voice, after AEC",
                  "-" if check.vad_false_rate_aec is None else f"{check.vad_false_rate_aec:.1%} of frames")
    table.add_row("own voice taken for the user's", "-" if check.false_starts is None else
                  f"{check.false_starts} times (the reply held a moment: {check.holds})")
    table.add_row("recommended mode", f"{check.recommended}: {check.reason}")
    out.print(table)
    if save:
        err.print(f"saved: voice mode 'auto' will use {check.recommended} (set voice.mode to override)")


def register(app: typer.Typer) -> None:
    app.command("voice")(voice_cmd)
    app.command("listen")(listen_cmd)
    app.add_typer(audio_app, name="audio")

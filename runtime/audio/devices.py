"""Audio devices through PortAudio (sounddevice): what exists, which one the user means, and why voice cannot run.

    reason = voice_unavailable_reason()        # None, or "no audio devices: ..." (text chat still works)
    devices = list_devices()
    mic = pick_device("USB", "input")          # a name (or part of it), an index, or "" for the default

sounddevice is imported here and nowhere else outside the duplex stream: importing it fails with
OSError when the PortAudio library is missing, which must become a reason, not a crash.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from edge_ai.errors import EdgeAIError

Direction = Literal["input", "output"]


class AudioUnavailable(EdgeAIError):
    """This machine cannot do audio at all (no PortAudio, no devices); voice is off, text works."""


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    host_api: str
    inputs: int  # channels it can record
    outputs: int  # channels it can play
    sample_rate: float  # its default rate: the duplex stream runs at it and resamples to 16 kHz
    default_input: bool
    default_output: bool


def portaudio() -> ModuleType:
    """The sounddevice module, or AudioUnavailable saying how to get PortAudio."""
    try:
        import sounddevice
    except ImportError as exc:
        raise AudioUnavailable("voice needs the 'voice' extra: pip install 'edge-ai[voice]'") from exc
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise AudioUnavailable(f"the PortAudio library is missing ({exc}); install it: apt-get install "
                               "libportaudio2 (Debian/Ubuntu) or brew install portaudio (macOS)") from exc
    _quiet_alsa()
    return sounddevice


_alsa_handler = None  # the no-op error handler given to libasound, kept alive for as long as the process


def _quiet_alsa() -> None:
    """Stop libasound printing notes ("underrun occurred") straight to stderr: in the terminal app they
    would be written over its screen. Underruns are seen by the stream itself."""
    global _alsa_handler
    if _alsa_handler is not None or sys.platform != "linux":
        return
    try:
        asound = ctypes.cdll.LoadLibrary("libasound.so.2")
    except OSError:
        return  # no ALSA: nothing prints
    handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)
    _alsa_handler = handler_type(lambda *args: None)
    asound.snd_lib_error_set_handler(_alsa_handler)


def list_devices() -> list[Device]:
    sd = portaudio()
    try:
        raw = sd.query_devices()
        apis = sd.query_hostapis()
        default_in, default_out = sd.default.device
    except sd.PortAudioError as exc:
        raise AudioUnavailable(f"PortAudio cannot list audio devices: {exc}") from exc
    return [Device(index=d["index"], name=d["name"], host_api=apis[d["hostapi"]]["name"],
                   inputs=d["max_input_channels"], outputs=d["max_output_channels"],
                   sample_rate=float(d["default_samplerate"]), default_input=d["index"] == default_in,
                   default_output=d["index"] == default_out) for d in raw]


def _channels(device: Device, direction: Direction) -> int:
    return device.inputs if direction == "input" else device.outputs


def pick_device(spec: str, direction: Direction) -> Device:
    """The device `spec` names: "" = the system default, a number = that index, else a unique name match."""
    devices = list_devices()
    usable = [d for d in devices if _channels(d, direction) > 0]
    noun = "microphone" if direction == "input" else "speaker"
    if not usable:
        raise AudioUnavailable(f"no {noun} found: this machine has no audio {direction} device")
    spec = spec.strip()
    if not spec:
        default = [d for d in usable if (d.default_input if direction == "input" else d.default_output)]
        return default[0] if default else usable[0]
    if spec.isdigit():
        match = [d for d in usable if d.index == int(spec)]
        if not match:
            raise EdgeAIError(f"no {noun} with index {spec}; see `edge-ai audio devices`")
        return match[0]
    exact = [d for d in usable if d.name.lower() == spec.lower()]
    match = exact or [d for d in usable if spec.lower() in d.name.lower()]
    if not match:
        raise EdgeAIError(f"no {noun} named like '{spec}'; see `edge-ai audio devices`")
    if len(match) > 1:
        names = "; ".join(f"{d.index}: {d.name}" for d in match)
        raise EdgeAIError(f"'{spec}' matches several {noun}s ({names}); give the index or more of the name")
    return match[0]


def voice_unavailable_reason(input_spec: str = "", output_spec: str = "") -> str | None:
    """Why voice mode cannot start here (one line), or None when a microphone and a speaker exist."""
    try:
        pick_device(input_spec, "input")
        pick_device(output_spec, "output")
    except EdgeAIError as exc:
        return str(exc)
    return None

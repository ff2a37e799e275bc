"""Configuration: defaults < TOML file in the user config dir < `EDGE_AI_*` environment < CLI flags.

Settings are frozen dataclasses grouped in sections; each field's metadata carries its allowed
range and help text, so validation, `config show` and the env-variable names all come from one
table. A wrong value anywhere raises `EdgeAIError` naming the key, where it came from and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from edge_ai import toml as tomllib
from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_write_text
from edge_ai.paths import get_paths
from edge_ai.rpc_servers import parse_servers

FORMAT_CHOICES = ("auto", "template", "builtin", "transcript")
"""Prompt formats a user may ask for (`edge_ai.chat_format`): `auto` decides from the file."""


def _setting(default: Any, help: str, lo: float | None = None, hi: float | None = None,
             choices: tuple[str, ...] | None = None, check: Callable[[Any, str], Any] | None = None) -> Any:
    """A setting's field; `check(value, where)` validates a value beyond its type and returns it normalised."""
    metadata = {"help": help, "lo": lo, "hi": hi, "choices": choices, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _rpc_servers(value: list[str], where: str) -> list[str]:
    return list(parse_servers(value, source=where)) if value else []


@dataclass(frozen=True)
class ModelSettings:
    name: str = _setting("gemma3-270m", "model to load: a registered name or a path to a .gguf file")
    context: int = _setting(4096, "context window in tokens (capped at the model's trained length)", 256, 1 << 20)
    threads: int = _setting(0, "CPU threads for generation (0 = physical cores)", 0, 512)
    batch: int = _setting(512, "prompt-processing batch size in tokens", 16, 8192)
    swa_full: bool = _setting(False, "keep a full-size KV cache for sliding-window layers (more memory)")
    format: str = _setting("auto", "prompt format: auto (decided per model), template (the file's chat template), "
                           "builtin (the family's turn tokens) or transcript (User:/Assistant: text, for base models)",
                           choices=FORMAT_CHOICES)
    rpc: list[str] = _setting([], "llama.cpp RPC servers (host:port, `edge-ai rpc-server` on other machines) that hold "
                              "part of the model's layers, split by the memory each offers; empty = this machine alone",
                              check=_rpc_servers)


@dataclass(frozen=True)
class ChatSettings:
    system_prompt: str = _setting("You are a helpful, concise assistant running offline on the user's computer.",
                                  "system prompt for new conversations")


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = _setting(0.7, "randomness; 0 = always the most likely token", 0.0, 5.0)
    top_p: float = _setting(0.95, "nucleus sampling: keep the smallest set of tokens with this total probability", 0.0, 1.0)
    top_k: int = _setting(40, "keep only the k most likely tokens (0 = off)", 0, 100000)
    min_p: float = _setting(0.05, "drop tokens less likely than min_p x the top token", 0.0, 1.0)
    repeat_penalty: float = _setting(1.1, "penalty for repeating recent tokens (1 = off)", 0.0, 10.0)
    seed: int = _setting(-1, "random seed (-1 = random each reply)", -1, 2**31 - 1)
    max_tokens: int = _setting(1024, "longest reply in tokens", 1, 1 << 20)
    stop: list[str] = _setting([], "extra strings that end a reply")


@dataclass(frozen=True)
class ServerSettings:
    host: str = _setting("127.0.0.1", "address `edge-ai serve` binds to")
    port: int = _setting(8088, "port `edge-ai serve` listens on", 1, 65535)
    api_key: str = _setting("", "if set, clients must send `Authorization: Bearer <key>`")
    queue_size: int = _setting(4, "requests that may wait per model before new ones get 429", 0, 1024)


@dataclass(frozen=True)
class TuiSettings:
    theme: str = _setting("textual-dark", "colour theme of the terminal app")


VOICE_MODES = ("auto", "full", "half", "headphones")
"""How the microphone and speaker share the room (`runtime.audio`): full duplex with echo cancellation, the
microphone gated while the assistant speaks, or headphones (no echo path); `auto` uses what `edge-ai audio test`
saved, else full duplex when echo cancellation can run, else half duplex."""
STT_BACKENDS = ("faster-whisper", "whisper", "onnx")
TTS_BACKENDS = ("espeak", "piper")


# English; a user speaking another language (voice.language) lists their own
STOP_PHRASES = [
    "stop", "stop it", "stop that", "stop talking", "stop there", "wait", "wait a second", "wait a minute",
    "hold on", "hold on a second", "hang on", "hang on a second", "one second", "one moment", "just a moment",
    "enough", "that's enough", "that is enough", "that will do", "that'll do", "be quiet", "quiet", "silence",
    "shut up", "shush", "shh", "hush", "cancel", "never mind", "nevermind", "pause", "got it", "i got it",
    "i get it",
]
STOP_FILLERS = ["please", "ok", "okay", "alright", "all right", "thanks", "thank you", "now", "no", "hey", "oh",
                "um", "uh", "yeah", "yes", "right", "sorry", "just", "fine"]


@dataclass(frozen=True)
class VoiceSettings:
    input_device: str = _setting("", "microphone: a device name (or part of it) or index from `edge-ai audio devices`; "
                                 "empty = the system default")
    output_device: str = _setting("", "speaker: a device name (or part of it) or index; empty = the system default")
    mode: str = _setting("auto", "full (echo cancellation), half (microphone muted while the assistant speaks), "
                         "headphones (no echo), or auto", choices=VOICE_MODES)
    push_to_talk: bool = _setting(False, "listen only while the talk key is held (toggled) instead of always")
    vad_threshold: float = _setting(0.5, "speech probability that starts speech (Silero VAD)", 0.01, 0.99)
    vad_release: float = _setting(0.35, "speech probability below which speech may end (hysteresis)", 0.01, 0.99)
    min_speech: float = _setting(0.25, "seconds of speech before it counts as the user speaking", 0.03, 5.0)
    pre_roll: float = _setting(0.3, "seconds of audio kept from before speech starts, so first syllables survive",
                               0.0, 2.0)
    turn_pause: float = _setting(0.35, "seconds of silence that end a turn when the words so far are a finished "
                                 "sentence or question", 0.1, 5.0)
    turn_wait: float = _setting(1.2, "seconds of silence that end a turn after an unfinished clause "
                                "(a trailing 'and', 'so', 'um')", 0.1, 10.0)
    turn_model: str = _setting("", "path to an end-of-turn ONNX model (Smart Turn format); empty = words and silence")
    stt_backend: str = _setting("faster-whisper", "speech-to-text: faster-whisper (default), whisper (openai-whisper, "
                                "needs the whisper extra) or onnx (an exported Whisper folder)", choices=STT_BACKENDS)
    stt_model: str = _setting("", "speech-to-text model: a folder or model file for the backend; empty = the offline "
                              "Whisper base that ships as a package")
    stt_beam_size: int = _setting(5, "hypotheses Whisper keeps while decoding what is said to the assistant (beam "
                                  "search; 1 = greedy: ~15% faster, ~4 points of word error rate worse on the "
                                  "bench's sentences); `edge-ai transcribe` has its own --beam-size", 1, 10)
    language: str = _setting("en", "language spoken to the assistant (a Whisper language code)")
    stop_phrases: list[str] = _setting(STOP_PHRASES, "phrases that, said on their own (fillers allowed), stop the "
                                       "assistant without an answer; empty = every utterance is answered")
    stop_fillers: list[str] = _setting(STOP_FILLERS, "words allowed around a stop phrase (\"okay, stop please\"); "
                                       "on their own they are answered")
    tts_backend: str = _setting("espeak", "text-to-speech: espeak (espeak-ng, default) or piper "
                                "(a neural voice: set tts_model to its .onnx)", choices=TTS_BACKENDS)
    tts_voice: str = _setting("en-us", "voice name for the text-to-speech backend")
    tts_model: str = _setting("", "model file of a neural voice (piper .onnx, its .onnx.json beside it); empty for espeak")
    tts_rate: float = _setting(1.0, "speaking speed (1 = the voice's normal speed)", 0.5, 3.0)


SCREEN_EXCLUDED_TITLES = [
    # password managers (their titles carry the app name, e.g. "Passwords.kdbx - KeePassXC")
    "KeePassXC", "KeePass", "1Password", "Bitwarden", "Passwords and Keys", "Seahorse", "gnome-keyring",
    "bank", "banking",
    "Private Browsing", "InPrivate", "Incognito",  # Firefox, Edge, Chrome/Chromium
]
SCREEN_EXCLUDED_CLASSES = ["keepassxc", "keepass", "1password", "bitwarden", "seahorse", "gcr-prompter", "gnome-keyring"]


@dataclass(frozen=True)
class ScreenSettings:
    excluded_titles: list[str] = _setting(SCREEN_EXCLUDED_TITLES, "windows whose title contains one of these "
                                          "(case-insensitive) are blanked out of every capture before OCR sees it")
    excluded_classes: list[str] = _setting(SCREEN_EXCLUDED_CLASSES, "windows whose WM_CLASS contains one of these "
                                           "(case-insensitive) are blanked out of every capture")
    downscale_width: int = _setting(1280, "width of the copy of a capture given to a model (pixels)", 64, 7680)
    ocr_budget_tokens: int = _setting(1500, "most tokens of screen text given to the model by `screen ask`", 50, 100000)
    vision_mmproj: str = _setting("", "vision projector (mmproj .gguf) of model.name when it is a vision-language "
                                  "model: `screen ask` then shows it the screen's image with its text; empty = text only")
    watch_interval: float = _setting(1.0, "seconds between captures in `screen watch` (at most 1 frame a second; "
                                     "longer while busy or on battery)", 1.0, 3600.0)
    watch_retention_days: float = _setting(14.0, "`screen watch` deletes stored screen text older than this (days)",
                                           0.01, 3650.0)
    watch_max_rows: int = _setting(50000, "most screen changes `screen watch` keeps (oldest deleted first)", 10, 10_000_000)
    watch_cpu_budget: float = _setting(0.05, "share of one core `screen watch` may use on average before it slows down",
                                       0.01, 1.0)
    watch_db: str = _setting("", "screen log database of `screen watch` (empty = screen-log.sqlite3 in the data dir)")


@dataclass(frozen=True)
class Config:
    model: ModelSettings = field(default_factory=ModelSettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    tui: TuiSettings = field(default_factory=TuiSettings)
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    screen: ScreenSettings = field(default_factory=ScreenSettings)

    def get(self, key: str) -> Any:
        section, name = _split_key(key)
        return getattr(getattr(self, section), name)

    def with_values(self, values: dict[str, Any], source: str = "command line") -> Config:
        """A copy with `values` (dotted key -> raw value) validated and applied."""
        sections = {s.name: dataclasses.asdict(getattr(self, s.name)) for s in dataclasses.fields(self)}
        for key, raw in values.items():
            section, name = _split_key(key, source)
            sections[section][name] = coerce(key, raw, source)
        return Config(**{s.name: s.type_cls(**sections[s.name]) for s in _sections()})

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Section:
    name: str
    type_cls: type


def _sections() -> list[_Section]:
    return [_Section(f.name, f.default_factory) for f in dataclasses.fields(Config)]  # type: ignore[arg-type]


def settings() -> dict[str, dataclasses.Field[Any]]:
    """Every setting as dotted key -> dataclass field (type, default, help, range)."""
    out: dict[str, dataclasses.Field[Any]] = {}
    for section in _sections():
        for f in dataclasses.fields(section.type_cls):
            out[f"{section.name}.{f.name}"] = f
    return out


def env_name(key: str) -> str:
    """`sampling.top_p` -> `EDGE_AI_SAMPLING_TOP_P`."""
    return "EDGE_AI_" + key.replace(".", "_").upper()


def _split_key(key: str, source: str = "the command line") -> tuple[str, str]:
    if key not in settings():
        known = ", ".join(sorted(settings()))
        raise EdgeAIError(f"unknown setting '{key}' in {source}; known settings: {known}")
    section, name = key.split(".", 1)
    return section, name


def _type_name(f: dataclasses.Field[Any]) -> str:
    return str(f.type)


def coerce(key: str, raw: Any, source: str) -> Any:
    """Turn a raw value (TOML value or string from env/CLI) into the setting's type, or raise."""
    _split_key(key, source)
    f = settings()[key]
    kind = _type_name(f)
    where = f"setting '{key}' from {source}"
    try:
        if kind == "bool":
            value = _to_bool(raw)
        elif kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw)
        elif kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
        elif kind == "list[str]":
            if isinstance(raw, str):
                value = [s for s in raw.split(",") if s] if raw else []
            elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
                value = list(raw)
            else:
                raise ValueError
        else:
            if not isinstance(raw, str):
                raise ValueError
            value = raw
    except (TypeError, ValueError):
        raise EdgeAIError(f"{where}: {raw!r} is not a valid {kind}; {f.metadata['help']}") from None
    lo, hi, choices = f.metadata["lo"], f.metadata["hi"], f.metadata["choices"]
    if lo is not None and not (lo <= value <= hi):
        raise EdgeAIError(f"{where}: {value!r} is out of range; allowed {lo}..{hi} ({f.metadata['help']})")
    if choices and value not in choices:
        raise EdgeAIError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return f.metadata["check"](value, where) if f.metadata["check"] else value


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError


def read_file_values() -> dict[str, Any]:
    """The config file's settings as dotted key -> raw value ({} when there is no file)."""
    path = get_paths().config_file
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise EdgeAIError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EdgeAIError(f"config file {path} is not valid TOML ({exc}); fix it or delete it to use defaults") from None
    values: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise EdgeAIError(f"config file {path}: '{section}' must be a [section] table; see `edge-ai config show`")
        for name, raw in table.items():
            values[f"{section}.{name}"] = raw
    return values


def load(overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the config file, then `EDGE_AI_*` variables, then `overrides` (CLI flags)."""
    config = Config()
    file_values = read_file_values()
    config = config.with_values(file_values, source=str(get_paths().config_file))
    env_values = {key: os.environ[env_name(key)] for key in settings() if env_name(key) in os.environ}
    for key, raw in env_values.items():
        config = config.with_values({key: raw}, source=f"environment variable {env_name(key)}")
    return config.with_values({k: v for k, v in (overrides or {}).items() if v is not None})


def set_value(key: str, raw: str) -> Any:
    """Validate and store one setting in the config file (atomically); return the stored value."""
    return set_values({key: raw})[key]


def set_values(raw_values: dict[str, str]) -> dict[str, Any]:
    """Validate every value first, then store them all in one atomic write of the config file."""
    stored = {key: coerce(key, raw, "the command line") for key, raw in raw_values.items()}
    values = read_file_values()
    values.update(stored)
    tree: dict[str, dict[str, Any]] = {}
    for dotted, v in values.items():
        section, name = dotted.split(".", 1)
        tree.setdefault(section, {})[name] = v
    atomic_write_text(get_paths().config_file, tomli_w.dumps(tree))
    return stored

"""Voice mode assembled from the settings: devices, duplex stream, hearing, STT, TTS and the conversation.

    session = VoiceSession.open(cfg, scheduler, on_event)   # raises AudioUnavailable with the reason
    session.start(); ...; session.close()

This is the one place that knows how the parts fit; the CLI's `voice`/`listen` and the TUI's voice
mode all go through it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_ai.config import Config
from edge_ai.errors import EdgeAIError
from edge_ai.fileio import atomic_write_text
from edge_ai.paths import get_paths
from runtime.audio.assistant import TurnOptions, VoiceAssistant
from runtime.audio.devices import pick_device
from runtime.audio.duplex import DuplexStream, Player
from runtime.audio.echo import ModeChoice, choose_mode
from runtime.audio.events import Status, VoiceEvent
from runtime.audio.hearing import Hearing
from runtime.audio.stop_request import StopPhrases
from runtime.audio.turn import SmartTurnModel, TurnPolicy
from runtime.audio.vad import VadOptions
from runtime.llm.events import SamplingParams
from runtime.llm.scheduler import Scheduler

if TYPE_CHECKING:
    from runtime.audio.selftest import AudioCheck

log = logging.getLogger(__name__)

# seconds to wait for the microphone's first sound: a late start (FIRST_CALLBACK, 3 s) and one reopen after it
MICROPHONE_WAIT = 8.0


def _audio_file() -> Path:
    return get_paths().data_dir / "audio.json"


def saved_audio_check() -> dict | None:
    """What `edge-ai audio test` measured and recommended last time, if it ran."""
    try:
        return json.loads(_audio_file().read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_audio_check(result: dict) -> Path:
    path = _audio_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2))
    return path


def first_time_check(cfg: Config, progress: Callable[[str], None]) -> AudioCheck | None:
    """Voice mode measures this machine's echo path the first time it starts (`edge-ai audio test`, ~12 s,
    the assistant's voice played and recorded) unless the user chose the mode: without it, a laptop whose
    speaker the echo canceller cannot cope with would start in full duplex and interrupt itself. The check
    is saved (the mode it recommends is used from then on) and returned; None when it ran before."""
    if cfg.voice.mode != "auto" or saved_audio_check() is not None:
        return None
    from runtime.audio.selftest import run_audio_test

    progress("first start of voice mode: checking the speaker and microphone (edge-ai audio test, ~12 s)…")
    check = run_audio_test(cfg, progress=progress)
    save_audio_check(check.as_dict())
    return check


def voice_mode(cfg: Config) -> ModeChoice:
    saved = saved_audio_check() or {}
    return choose_mode(cfg.voice.mode, saved.get("recommended"))


def vad_options(cfg: Config) -> VadOptions:
    v = cfg.voice
    if v.vad_release > v.vad_threshold:
        raise EdgeAIError(f"voice.vad_release ({v.vad_release}) must not exceed voice.vad_threshold "
                          f"({v.vad_threshold})")
    return VadOptions(threshold=v.vad_threshold, release=v.vad_release, min_speech=v.min_speech, pre_roll=v.pre_roll)


def turn_options(cfg: Config, *, reply: bool = True) -> TurnOptions:
    v = cfg.voice
    model = SmartTurnModel(Path(v.turn_model).expanduser()) if v.turn_model else None
    return TurnOptions(policy=TurnPolicy(pause=v.turn_pause, wait=v.turn_wait, model=model),
                       sampling=SamplingParams.from_settings(cfg.sampling, max_tokens=min(cfg.sampling.max_tokens, 160)),
                       reply=reply, stop=StopPhrases(v.stop_phrases, v.stop_fillers))


@dataclass
class VoiceSession:
    assistant: VoiceAssistant
    stream: DuplexStream
    hearing: Hearing
    mode: ModeChoice

    @classmethod
    def open(cls, cfg: Config, scheduler: Scheduler | None, on_event: Callable[[VoiceEvent], None], *,
             reply: bool = True, history: Sequence[dict[str, str]] = ()) -> VoiceSession:
        """Everything wired but not started. `scheduler` None (or `reply=False`): transcribe only.
        `history`: the conversation so far (user/assistant messages) the replies follow on from."""
        from runtime.audio.speakable import SpeakableChunker
        from runtime.audio.streaming_stt import StreamingTranscriber
        from runtime.audio.stt import open_stt
        from runtime.audio.tts import open_tts

        mic = pick_device(cfg.voice.input_device, "input")
        speaker = pick_device(cfg.voice.output_device, "output")
        mode = voice_mode(cfg)
        # temperature 0 only: a sampled fallback re-decodes (1.7 s each on a 2-core laptop) while the user waits
        transcriber = StreamingTranscriber(open_stt(cfg, temperatures=(0.0,)), language=cfg.voice.language)
        tts = open_tts(cfg) if reply else None
        player = Player()
        assistant = VoiceAssistant(transcriber=transcriber, tts=tts, chunker=SpeakableChunker, scheduler=scheduler,
                                   player=player, on_event=on_event,
                                   options=turn_options(cfg, reply=reply and scheduler is not None),
                                   history=history)
        hearing = Hearing(mode.mode, assistant.hear, vad=vad_options(cfg),
                          assistant_speaking=lambda: assistant.assistant_speaking)
        stream = DuplexStream(mic, speaker, player, hearing.on_audio,
                              on_status=lambda message: on_event(Status(message)), relaxed=hearing.relaxed,
                              between_turns=hearing.between_turns)
        on_event(Status(f"voice: {mode.mode} duplex ({mode.reason}); microphone '{mic.name}', speaker "
                        f"'{speaker.name}'"))
        return cls(assistant, stream, hearing, mode)

    def start(self) -> None:
        self.assistant.start()
        self.stream.start()

    def wait_for_microphone(self, timeout: float = MICROPHONE_WAIT) -> bool:
        """After `start`: block until the microphone's sound reaches the hearing (False: not within `timeout`,
        the stream's watchdog goes on trying). A user told "listening" before then loses the first words."""
        return self.stream.microphone_live.wait(timeout)

    def close(self) -> None:
        self.stream.close()
        self.assistant.close()

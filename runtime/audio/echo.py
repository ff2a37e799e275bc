"""Echo cancellation: the microphone cleaned of the assistant's own voice, so it never interrupts itself.

    aec = EchoCanceller()                        # WebRTC AEC3 (aec-audio-processing) + noise suppression
    clean = aec.process(mic, speaker)            # 16 kHz float blocks in step; returns whole 10 ms frames
    mode = choose_mode("auto", saved=None)       # full / half / headphones, with the reason

What the speaker is sent is the reference: AEC3 finds its delay in the microphone signal (the delay
estimator needs a second or two of echo to lock) and subtracts it. While both talk, AEC3 also
suppresses the user, which is why the assistant stops speaking at a barge-in rather than trying to
listen through itself. When AEC cannot run (the library is missing), the fallback is half duplex:
the microphone is ignored while the assistant speaks, so the user interrupts with the talk key.
With headphones there is no echo path and the raw microphone is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_ai.errors import EdgeAIError

RATE = 16_000
FRAME = 160  # 10 ms: the only frame size WebRTC's audio processing takes
# samples by which each processed frame's audio lags the frame fed in, at 16 kHz: AEC3's block filtering 128,
# the noise suppressor's overlap-add 96 more (measured by cross-correlating its input and output)
AEC_DELAY = 128
NS_DELAY = 96
MODES = ("full", "half", "headphones")


def aec_unavailable_reason() -> str | None:
    try:
        import aec_audio_processing  # noqa: F401
    except ImportError as exc:
        return f"echo cancellation is unavailable ({exc}); pip install 'edge-ai[voice]' builds it"
    return None


def _to_int16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class EchoCanceller:
    """WebRTC AEC3 with noise suppression on 16 kHz mono; buffers to its 10 ms frames."""

    def __init__(self, noise_suppression: bool = True) -> None:
        reason = aec_unavailable_reason()
        if reason:
            raise EdgeAIError(reason)
        from aec_audio_processing import AudioProcessor

        # automatic gain control off: it would pump the echo back up between words, and the VAD and
        # Whisper both cope with level; its own VAD off: Silero decides what is speech
        self._apm = AudioProcessor(enable_aec=True, enable_ns=noise_suppression, ns_level=1, enable_agc=False,
                                   agc_mode=1, enable_vad=False)
        self._apm.set_stream_format(RATE, 1, RATE, 1)
        self._apm.set_reverse_stream_format(RATE, 1)
        self._delay = AEC_DELAY + (NS_DELAY if noise_suppression else 0)
        self._mic = np.zeros(0, dtype=np.float32)
        self._ref = np.zeros(0, dtype=np.float32)
        self._fed = np.zeros(0, dtype=np.float32)  # the last `_delay` microphone samples processed
        # output samples to drop: the delay's first silence, or what it held at the last flush (returned as it was
        # then); `_delay - _stale` samples of the microphone are inside the delay, not yet returned
        self._stale = self._delay

    def process(self, mic: np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """The microphone with the speaker's echo removed, for every whole 10 ms frame received so far
        (`lag` samples behind the microphone)."""
        self._mic = np.concatenate([self._mic, mic.astype(np.float32, copy=False)])
        self._ref = np.concatenate([self._ref, speaker.astype(np.float32, copy=False)])
        frames = min(self._mic.size, self._ref.size) // FRAME
        out = np.empty(frames * FRAME, dtype=np.float32)
        for i in range(frames):
            part = slice(i * FRAME, (i + 1) * FRAME)
            self._apm.process_reverse_stream(_to_int16(self._ref[part]))
            cleaned = self._apm.process_stream(_to_int16(self._mic[part]))
            out[part] = np.frombuffer(cleaned, dtype="<i2").astype(np.float32) / 32768.0
        self._fed = np.concatenate([self._fed, self._mic[:frames * FRAME]])[-self._delay:]
        self._mic, self._ref = self._mic[frames * FRAME:], self._ref[frames * FRAME:]
        drop = min(self._stale, out.size)
        self._stale -= drop
        return out[drop:]

    @property
    def lag(self) -> int:
        """Samples by which the cleaned stream trails the microphone: those waiting for a whole 10 ms frame
        and those inside the processing's delay (14 ms with noise suppression; none after a flush)."""
        return self._mic.size + self._delay - self._stale

    def flush(self) -> np.ndarray:
        """The microphone samples the cleaned stream has not yet returned, as they are (called once the echo
        is gone): a stream that goes on with the raw microphone after them loses and repeats none. The
        processing's delay still holds them; process() drops them when it is next used."""
        held = self._delay - self._stale
        rest = np.concatenate([self._fed[max(0, self._fed.size - held):], self._mic])
        self._mic, self._ref = np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
        self._fed = np.zeros(0, dtype=np.float32)
        self._stale = self._delay
        return rest


def erle_db(mic: np.ndarray, cleaned: np.ndarray) -> float:
    """Echo return loss enhancement: how much quieter the echo got, in dB (both with the echo alone)."""
    before = float(np.mean(np.square(mic, dtype=np.float64)))
    after = float(np.mean(np.square(cleaned, dtype=np.float64)))
    return 10.0 * np.log10(max(before, 1e-12) / max(after, 1e-12))


def steady_erle_db(mic: np.ndarray, cleaned: np.ndarray, window: int = 8000) -> float:
    """ERLE once converged: the median over `window`-sample stretches (0.5 s at 16 kHz). PulseAudio now and
    then jumps the loop's delay, AEC3 takes ~0.5 s to follow, and that one stretch would otherwise drag the
    mean of a few seconds below what the canceller holds the rest of the time (18 dB vs > 30 dB seen)."""
    stretches = [erle_db(mic[i:i + window], cleaned[i:i + window]) for i in range(0, mic.size - window + 1, window)]
    return float(np.median(stretches)) if stretches else erle_db(mic, cleaned)


@dataclass(frozen=True)
class ModeChoice:
    mode: str  # full, half or headphones
    reason: str  # why, for the user


def choose_mode(setting: str, saved: str | None = None) -> ModeChoice:
    """The duplex mode to run: the user's setting, else what `audio test` saved, else full when AEC can run."""
    if setting in MODES:
        if setting == "full" and (reason := aec_unavailable_reason()):
            return ModeChoice("half", f"full duplex was asked for but {reason}")
        return ModeChoice(setting, "set in voice.mode")
    if setting != "auto":
        raise EdgeAIError(f"voice.mode must be auto, {', '.join(MODES)}; got '{setting}'")
    if saved in MODES:
        return ModeChoice(saved, "chosen by `edge-ai audio test`")
    if reason := aec_unavailable_reason():
        return ModeChoice("half", reason)
    return ModeChoice("full", "echo cancellation available (run `edge-ai audio test` to check this machine)")

"""`edge-ai audio test`: measure this machine's echo path and pick the duplex mode that will not self-interrupt.

    check = run_audio_test(cfg)          # ~8 s: plays the assistant's voice, records the microphone
    check.recommended, check.erle_db, check.vad_false_rate_aec

The assistant's own voice (the configured TTS) is played through the chosen speaker while the
microphone records, on one duplex stream, exactly as in a conversation. Then, from the recording:
the echo delay (cross-correlation with what was played), the echo level, the echo cancellation
achieved (the median ERLE of the second half's half-second stretches, once AEC3 has converged), the share of
32 ms frames the VAD calls speech on the raw and on the cleaned microphone, and the longest run of such
frames on the cleaned one. Full duplex needs the echo cancelled and no run as long as a barge-in
(`hearing.BARGE_IN`): that would cut the assistant off mid-sentence. Shorter blips of residual echo
only hold the reply for a moment, and the echo guard judges them first in a conversation; the old
rule, a frame share over 2%, sent loops with ERLE over 70 dB and 2-4 frame blips to half duplex, which
cannot be interrupted at all. A loop whose delay jumps (PulseAudio's null sink moves it by ~10 ms a
few times a test) leaks echo for up to 0.6 s after a jump, until AEC3 finds the delay again: such a
loop gets half duplex, here about one test in four.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from edge_ai.config import Config
from runtime.audio.devices import pick_device
from runtime.audio.duplex import RATE, DuplexStream, Player
from runtime.audio.echo import EchoCanceller, aec_unavailable_reason, steady_erle_db
from runtime.audio.hearing import BARGE_IN
from runtime.audio.vad import FRAME, SileroVad

TEST_TEXT = ("This is the assistant checking your speakers and microphone. It speaks for a few seconds, "
             "listens to its own voice come back, and measures how well the echo is removed.")
QUIET_LEAD = 0.4  # seconds recorded before playing: the room's noise floor
TAIL = 0.6  # seconds recorded after playing: the echo's tail
NO_ECHO_DB = -40.0  # echo this far below the played signal: headphones, or speakers far from the microphone
MIN_ERLE_DB = 15.0  # echo cancellation needed for full duplex


@dataclass(frozen=True)
class AudioCheck:
    microphone: str
    speaker: str
    sample_rate: int
    delay_ms: float  # from handing audio to the speaker to hearing it back
    echo_db: float  # echo level on the microphone relative to the played signal
    erle_db: float | None  # echo cancellation achieved (None: AEC unavailable)
    vad_false_rate_raw: float  # share of playback frames the VAD calls speech, raw microphone
    vad_false_rate_aec: float | None  # the same after echo cancellation
    vad_longest_aec_s: float | None  # the longest run of such frames after echo cancellation, seconds
    recommended: str  # full, half or headphones
    reason: str
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def estimate_delay(reference: np.ndarray, recorded: np.ndarray, max_seconds: float = 1.0) -> int:
    """Samples by which `recorded` lags `reference` (FFT cross-correlation, searched up to `max_seconds`)."""
    n = int(2 ** np.ceil(np.log2(reference.size + recorded.size)))
    corr = np.fft.irfft(np.fft.rfft(recorded, n) * np.conj(np.fft.rfft(reference, n)), n)
    window = corr[: min(int(max_seconds * RATE), corr.size)]
    return int(np.argmax(np.abs(window)))


def vad_speech_frames(samples: np.ndarray, threshold: float) -> tuple[float, float]:
    """(share of the 32 ms frames of `samples` Silero scores as speech, seconds of the longest run of them)."""
    vad = SileroVad()
    frames = samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME)
    speech = [vad(frame) >= threshold for frame in frames]
    run = longest = 0
    for is_speech in speech:
        run = run + 1 if is_speech else 0
        longest = max(longest, run)
    return (float(np.mean(speech)) if speech else 0.0), longest * FRAME / RATE


def run_audio_test(cfg: Config, progress: Callable[[str], None] = lambda message: None) -> AudioCheck:
    from runtime.audio.tts import open_tts

    began = time.monotonic()
    mic, speaker = pick_device(cfg.voice.input_device, "input"), pick_device(cfg.voice.output_device, "output")
    tts = open_tts(cfg)
    speech = tts.synthesize(TEST_TEXT)
    recorded: list[np.ndarray] = []
    played: list[np.ndarray] = []

    def on_audio(mic_block: np.ndarray, ref_block: np.ndarray) -> None:
        recorded.append(mic_block)
        played.append(ref_block)

    player = Player()
    stream = DuplexStream(mic, speaker, player, on_audio)
    progress(f"playing the assistant's voice on '{speaker.name}', recording '{mic.name}'")
    stream.start()
    try:
        time.sleep(QUIET_LEAD)
        finished = []
        player.play(speech, tts.sample_rate, on_done=lambda item: finished.append(time.monotonic()))
        deadline = time.monotonic() + speech.size / tts.sample_rate + 5.0
        while not finished and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(TAIL)
    finally:
        stream.close()
    progress("measuring")
    mic_audio, ref_audio = np.concatenate(recorded), np.concatenate(played)
    return analyse(mic_audio, ref_audio, threshold=cfg.voice.vad_threshold, microphone=mic.name,
                   speaker=speaker.name, sample_rate=stream.rate, began=began)


def analyse(mic_audio: np.ndarray, ref_audio: np.ndarray, *, threshold: float, microphone: str = "",
            speaker: str = "", sample_rate: int = RATE, began: float | None = None) -> AudioCheck:
    """The figures and the recommendation from a recording (16 kHz) and what was played in step with it."""
    loud = np.flatnonzero(np.abs(ref_audio) > 1e-3)
    start, end = (int(loud[0]), int(loud[-1])) if loud.size else (0, ref_audio.size)
    delay = estimate_delay(ref_audio, mic_audio)
    echo = mic_audio[start + delay: end + delay]
    echo_db = 10 * np.log10(max(float(np.mean(np.square(echo, dtype=np.float64))), 1e-12)
                            / max(float(np.mean(np.square(ref_audio[start:end], dtype=np.float64))), 1e-12))
    raw_rate, _ = vad_speech_frames(echo, threshold)
    erle = aec_rate = aec_longest = None
    if aec_unavailable_reason() is None:
        cleaned = EchoCanceller().process(mic_audio, ref_audio)
        second_half = slice(start + delay + (end - start) // 2, min(end + delay, cleaned.size))
        erle = steady_erle_db(mic_audio[second_half], cleaned[second_half])
        aec_rate, aec_longest = vad_speech_frames(cleaned[start + delay: end + delay], threshold)
    if echo_db < NO_ECHO_DB:
        mode, reason = "headphones", f"almost no echo reaches the microphone ({echo_db:.0f} dB)"
    elif erle is None:
        mode, reason = "half", "echo cancellation is unavailable here"
    elif erle >= MIN_ERLE_DB and aec_longest is not None and aec_longest < BARGE_IN:
        mode, reason = "full", (f"echo cancelled by {erle:.0f} dB; the VAD heard the assistant in "
                                f"{aec_rate:.1%} of frames, never for {BARGE_IN:.2f} s on end")
    else:
        mode, reason = "half", (f"echo cancellation too weak here ({erle:.0f} dB, the VAD heard the assistant for "
                                f"{aec_longest:.2f} s on end): the microphone will pause while the assistant speaks")
    return AudioCheck(microphone=microphone, speaker=speaker, sample_rate=sample_rate,
                      delay_ms=round(delay / RATE * 1000, 1), echo_db=round(float(echo_db), 1),
                      erle_db=None if erle is None else round(erle, 1), vad_false_rate_raw=round(raw_rate, 4),
                      vad_false_rate_aec=None if aec_rate is None else round(aec_rate, 4),
                      vad_longest_aec_s=None if aec_longest is None else round(aec_longest, 3), recommended=mode,
                      reason=reason, seconds=round(time.monotonic() - began, 1) if began else 0.0)

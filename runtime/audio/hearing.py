"""The microphone side of a conversation: echo cancellation, voice activity, the level meter.

    hearing = Hearing(mode="full", vad=VadOptions(), on_hear=handle)
    stream = DuplexStream(mic, speaker, player, hearing.on_audio)     # runs on the audio worker thread

Each 16 kHz block from the duplex stream is cleaned (full duplex: AEC3 against what the speaker
was sent, while there is echo to cancel; a second after the speaker falls silent the microphone is
used as it is, which halves the cost of listening while nobody speaks; half duplex: dropped while
the assistant speaks; headphones: used as it is), cut into Silero's 32 ms frames and scored (not
the frames of a quiet room's noise floor while nobody speaks and nothing plays: `QuietGate`).
`on_hear` receives `SpeechStarted` (with the pre-roll), every frame from then until
`SpeechStopped` (pauses included: the transcript needs them), a `Silence` tick per frame once
speech has stopped (the turn logic times the pause with it), and a `Level` every 100 ms.

While the assistant speaks, `SpeechOnset` comes at the onset of what may be the user, before it is
confirmed as speech, and `FalseStart` if no speech then follows for `resume_after`: the assistant holds
its playback at the onset and resumes at a false start, so a barge-in silences it within ~0.2 s without
every cough ending the reply (LiveKit's agents resume a false interruption the same way). In full
duplex the onset is the first 30 ms of sound the speaker's echo does not explain (`EchoGuard.
sound_over_echo`, on the raw microphone, block by block), or else the first frame the segmenter counts as
speech: Silero needs 60-130 ms of a word, and a starting "s" or "h" is not speech to it. Offline on two
recordings of the null sink's loop (20 replies, 160 s) with 96 cut-ins mixed in, no hold on the echo
alone either way; held after 0.050 s on average at 0 dB (Silero's first frame: 0.118), 0.063 at -6 dB
(0.192), 0.085 at -10 dB (0.33). bench_voice: barge-in p50 0.23 -> 0.17 s, p95 0.26-0.28 -> 0.20 s.
Sound that is not speech (a keystroke) holds the reply for a hiccup at most: SOUND_RESUME, SOUND_REST.

While the assistant speaks, the speech needed to count as a barge-in is `barge_in` seconds rather
than `min_speech`: an interruption must stop the reply within a fraction of a second, and the echo
canceller keeps the assistant's own voice from reaching the VAD. AEC3 alone fails both ways: until
it has locked onto the loop's delay (the first second of the first reply, again after the delay
jumps) its output still carries the echo, and during double talk its suppressor can remove the user
with the echo. So in full duplex, while the speaker's echo may be on the microphone, each frame is
also judged on the raw microphone by `EchoGuard`: speech that a delayed copy of what the speaker
played explains is the assistant hearing itself (silence); speech it explains much less than usual
is the user cutting in, even if the canceller removed it.

What a cut-in says reaches the transcript from the microphone itself, from the hold until the speaker plays
again (a reply resumed or begun): AEC3 suppresses the user while both talk and its noise suppressor dulls them
for the second after, and Whisper lost the first word ("Hold on a second." -> "On a second."). What the speaker
played before the hold still arrives for the loop's delay, under that word: the guard's last fit of the echo
alone, kept at the hold, predicts it from what was played and it is taken out (`EchoGuard.without_held_echo`,
where the direct sound is most of the echo: not in a reverberant room). Fits made after the hold, or with the
user's first sound in their window, take some of the user out too (an earlier try that subtracted the latest
fit lost words on the sound server's loop: cut-in WER 0.84 / 0.89 against 0.42-0.62 as heard). In
`benchmarks/bench_cut_in.py`'s closed loop (10 cut-ins, the reply stopped at each hold) Whisper's word errors
went 0.61 -> 0.41 at a loop delay of 0.3 s (0.37 -> 0.39 at 0.07 s); bench_voice, 20 cut-ins a run on the null
sink's loop: 0.45 / 0.35 -> 0.24 / 0.28.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.audio.echo import EchoCanceller
from runtime.audio.echo_guard import EchoGuard
from runtime.audio.events import Level
from runtime.audio.quiet_gate import QuietGate
from runtime.audio.vad import FRAME, FRAME_SECONDS, SileroVad, SpeechStarted, SpeechStopped, VadOptions, VadSegmenter

LEVEL_EVERY = 3  # frames between level reports (~100 ms)
BARGE_IN = 0.15  # seconds of speech over the assistant that cut it off (a shorter start only holds its playback)
ECHO_TAIL = 1.0  # seconds after the speaker falls silent during which echo may still arrive: AEC runs until then
# seconds of silence after speech during which the pause is still timed frame by frame: the turn's end
# (the speculative transcript at 0.12 s, the commit at up to voice.turn_wait) is decided in it
PAUSE_TIMED = 2.0
# A hold made by sound over the echo alone (not yet speech to Silero) resumes after SOUND_RESUME seconds with no
# speech, not `resume_after`: a keystroke or a knock costs the reply a hiccup, not a pause; and after two such
# false starts within SOUND_REST seconds (someone typing while the assistant talks) holds wait for Silero again
# for SOUND_REST seconds. Simulated fast typing (6 keys a second) over 80 s of the null sink's loop: 23-33
# holds of 0.3 s each without these two rules, 6 of at most 0.14 s with them (Silero alone: none).
SOUND_RESUME = 0.15
SOUND_REST = 30.0
RATE = 16_000


@dataclass(frozen=True)
class SpeechFrame:
    """32 ms of the user's speech (or of a pause inside it), 16 kHz."""

    samples: np.ndarray


@dataclass(frozen=True)
class Silence:
    """Seconds since the user's speech stopped; sent every frame until speech starts again."""

    seconds: float


@dataclass(frozen=True)
class SpeechOnset:
    """The first frames of speech while the assistant speaks: maybe the user cutting in, not yet confirmed."""


@dataclass(frozen=True)
class FalseStart:
    """The speech of the last `SpeechOnset` fell silent before it counted as speech."""


HearEvent = SpeechStarted | SpeechOnset | FalseStart | SpeechFrame | SpeechStopped | Silence | Level


class Hearing:
    def __init__(self, mode: str, on_hear: Callable[[HearEvent], None], vad: VadOptions = VadOptions(),
                 barge_in: float = BARGE_IN, resume_after: float = 0.3,
                 assistant_speaking: Callable[[], bool] = lambda: False, echo_guard: bool = True) -> None:
        self.mode = mode
        self._aec = EchoCanceller() if mode == "full" else None
        self._guard = EchoGuard(vad) if mode == "full" and echo_guard else None
        self._vad = SileroVad()
        self._gate = QuietGate()
        self._segmenter = VadSegmenter(vad)
        self._listen_frames = self._segmenter.start_frames
        self._barge_frames = max(1, round(barge_in / FRAME_SECONDS))
        self._resume_frames = max(1, round(resume_after / FRAME_SECONDS))
        self._held_by_sound = False  # the current hold came from sound over the echo that Silero has not called speech
        self._sound_resume_frames = max(1, round(min(SOUND_RESUME, resume_after) / FRAME_SECONDS))
        self._rest_frames = round(SOUND_REST / FRAME_SECONDS)
        self._sound_false_starts: collections.deque[int] = collections.deque(maxlen=2)  # frame numbers
        self._sound_rests_until = 0  # frame number before which only speech holds the playback
        self._onset_told = False  # a SpeechOnset awaits its SpeechStarted or FalseStart
        self._quiet_frames = 0  # frames since the held start last had speech
        self._cut_in = False  # the user cut in and the speaker has not played since: the transcript hears the raw mic
        self._on_hear = on_hear
        self._assistant_speaking = assistant_speaking
        self._pending = np.zeros(0, dtype=np.float32)
        self._raw = np.zeros(2 * FRAME, dtype=np.float32)  # the latest raw microphone, up to the newest sample
        self._frames = 0
        self._speaker_quiet = round(ECHO_TAIL * RATE)  # samples since the speaker last played anything (none yet)
        self.muted = False  # push-to-talk released: frames are treated as silence

    def on_audio(self, mic: np.ndarray, speaker: np.ndarray) -> None:
        """A block from the duplex stream: the microphone and what the speaker played, both 16 kHz."""
        speaking = self._assistant_speaking()
        playing = bool(np.any(speaker))
        if playing and self._speaker_quiet:
            self._cut_in = False  # the speaker plays again after a silence: a reply resumed or begun
        self._speaker_quiet = 0 if playing else self._speaker_quiet + speaker.size
        raw = mic
        if self._guard is not None:
            self._guard.push(mic, speaker)
            if (speaking and self._echo_possible and self._frames >= self._sound_rests_until
                    and not (self._onset_told or self._segmenter.in_speech or self.muted)
                    and self._guard.sound_over_echo()):
                self._hold(by_sound=True)
        if self._aec is not None:  # AEC3 while echo may arrive, then the microphone as it is, no sample lost
            mic = self._aec.process(mic, speaker) if self._echo_possible else np.concatenate([self._aec.flush(), mic])
        elif self.mode == "half" and speaking:
            mic = np.zeros_like(mic)  # the microphone is gated while the assistant talks
        self._pending = np.concatenate([self._pending, mic])
        self._raw = np.concatenate([self._raw, raw])[-(self._pending.size + 2 * FRAME):]
        self._segmenter.start_frames = self._barge_frames if speaking else self._listen_frames
        frames = []
        while self._pending.size >= FRAME:
            frame, self._pending = self._pending[:FRAME], self._pending[FRAME:]
            frames.append((frame, *self._raw_frame()))
        levels, probabilities = self._score([frame for frame, _, _ in frames])
        for (frame, raw_frame, behind), level, probability in zip(frames, levels, probabilities):
            self._frame(frame, raw_frame, behind, level, probability, speaking)
            self._tell_onset(speaking)

    def _raw_frame(self) -> tuple[np.ndarray, int]:
        """The raw microphone over the samples of the frame just cut, and how many samples before the newest it
        ends: the cleaned stream trails the raw one by the canceller's `lag`, so by `lag + len(pending)`."""
        behind = (self._aec.lag if self._aec is not None else 0) + self._pending.size
        end = self._raw.size - behind
        return self._raw[end - FRAME:end], behind

    def relaxed(self) -> bool:
        """Nothing needs a fast reaction: between turns, with no pause after speech being timed and nothing
        echoing. The stream may then hand audio over in larger, rarer blocks (a start is heard up to ~0.1 s
        later; the pre-roll keeps its first syllables either way)."""
        segmenter = self._segmenter
        return self.between_turns() and not (self._echo_possible
                                             or (segmenter.spoke and segmenter.silence < PAUSE_TIMED))

    def between_turns(self) -> bool:
        """Nobody is speaking or starting to and the assistant is neither thinking nor speaking: a gap in
        the audio now cuts no one's words (an echo's tail or a pause being timed may be under way)."""
        segmenter = self._segmenter
        return not (segmenter.in_speech or segmenter.starting or self._onset_told or self._assistant_speaking())

    @property
    def _echo_possible(self) -> bool:
        """The speaker played something recently enough for its echo to be on the microphone."""
        return self._speaker_quiet < ECHO_TAIL * RATE

    def _tell_onset(self, speaking: bool) -> None:
        """SpeechOnset at the first frame of a start over the assistant; FalseStart once no speech has
        followed it for `resume_after` (a word's stop consonants break a start into pieces: the hold
        bridges them rather than letting the reply resume between two syllables of "stop")."""
        starting = self._segmenter.starting
        if not self._onset_told:
            if speaking and starting:
                self._hold(by_sound=False)
        elif self._segmenter.in_speech:
            self._onset_told = False  # confirmed: SpeechStarted was sent
        elif starting:
            self._quiet_frames, self._held_by_sound = 0, False
        else:
            self._quiet_frames += 1
            if self._quiet_frames >= (self._sound_resume_frames if self._held_by_sound else self._resume_frames):
                if self._held_by_sound:  # sound that never sounded like speech
                    self._rest_sound_after_false_starts()
                self._onset_told = self._cut_in = False
                self._on_hear(FalseStart())

    def _hold(self, by_sound: bool) -> None:
        self._onset_told, self._quiet_frames, self._held_by_sound = True, 0, by_sound
        self._cut_in = self._aec is not None
        if self._guard is not None:
            self._guard.hold_fit()
        self._on_hear(SpeechOnset())

    def _rest_sound_after_false_starts(self) -> None:
        self._sound_false_starts.append(self._frames)
        if len(self._sound_false_starts) == 2 and self._frames - self._sound_false_starts[0] <= self._rest_frames:
            self._sound_rests_until = self._frames + self._rest_frames
            self._sound_false_starts.clear()

    def _score(self, frames: list[np.ndarray]) -> tuple[list[float], list[float]]:
        """Each frame's level (dBFS) and speech probability. A quiet room's noise while nothing is afoot
        (idle's main cost) is not scored, nor is anything while muted: probability 0. From the first
        frame that is not such noise on, the frames are scored in one call, after the skipped ones just
        before (`QuietGate`): a call on a core that dozed since the last one costs about as much as
        several frames (idle listening in a noisy room, where every frame is scored: 6.4% of a core
        before, 5.0-5.3% after, bench_voice)."""
        levels, first = [], len(frames)
        for i, frame in enumerate(frames):
            quiet = self._gate.quiet(frame)  # every frame: it tracks the noise floor
            levels.append(self._gate.level)
            if first == len(frames) and not self.muted and not (quiet and self.relaxed()):
                first = i
        for frame in frames[:first]:
            self._gate.skip(frame)
        if first == len(frames):
            return levels, [0.0] * first
        warm_up = self._gate.take_skipped()
        scored = self._vad.score([*warm_up, *frames[first:]])[len(warm_up):]
        return levels, [0.0] * first + [float(p) for p in scored]

    def _frame(self, frame: np.ndarray, raw_frame: np.ndarray, behind: int, level: float, probability: float,
               speaking: bool) -> None:
        """Segment one frame scored `probability`; `raw_frame` is the microphone over its samples, which end
        `behind` samples before the newest."""
        if not self.muted and self._guard is not None and self._echo_possible:
            probability = self._guard.judge(probability, raw_frame, speaking)
        if self._cut_in:
            frame = raw_frame if self._guard is None else self._guard.without_held_echo(raw_frame, behind)
        event = self._segmenter.push(frame, probability)
        self._frames += 1
        if self._frames % LEVEL_EVERY == 0:
            self._on_hear(Level(db=max(level, -100.0), speech=probability))
        if event is not None:
            self._on_hear(event)
        if self._segmenter.in_speech and not isinstance(event, SpeechStarted):
            self._on_hear(SpeechFrame(frame))
        elif not self._segmenter.in_speech and not isinstance(event, SpeechStopped) and self._segmenter.spoke:
            self._on_hear(Silence(self._segmenter.silence))

"""Whose voice is on the microphone while the speaker plays: the assistant's own, or the user's?

    guard = EchoGuard(VadOptions())
    guard.push(raw_mic, speaker)                        # every 16 kHz block, before echo cancellation
    p = guard.judge(p_cleaned, raw_frame, speaking)     # per 32 ms VAD frame while echo is possible
    guard.echo_share()                                  # 0..1: how much of the last 0.1 s the speaker explains

The echo canceller (AEC3) fails in two ways that a conversation feels at once. It needs a second or
two of the assistant's voice to find the loop's delay, and must find it again when the delay jumps
(an underrun, a device switch): meanwhile its output still carries the echo, and the VAD would take
the assistant's own voice for the user cutting in. And while both talk, its suppressor removes the
user along with the echo when the echo is loud, so a barge-in goes unheard. This check needs no
convergence: it searches every delay up to `max_delay` for the scaled copy of what the speaker
played that best matches the raw microphone (normalised cross-correlation, one FFT) and reports
the share of the microphone's energy that copy accounts for. Echo alone scores near 1 on a clean
loop (lower in a reverberant room: the typical score for echo alone is tracked while the speaker
plays); the user talking over the echo at a similar level scores around half of that or less.

`judge` turns that into the VAD probability the segmenter sees: speech the canceller let through
that the echo explains is silence; speech on the raw microphone that the echo explains much less
than usual is the user, even when the canceller removed it.
"""

from __future__ import annotations

import collections

import numpy as np

from runtime.audio.vad import SileroVad, VadOptions

RATE = 16_000
WINDOW = 0.1  # seconds of microphone judged: short, as the loop's delay drifts (PulseAudio adapts its rates)
MAX_DELAY = 1.0  # seconds between a sample reaching the speaker and coming back (Bluetooth, a delay jump)
TAPS = 16  # the fitted filter spans the best delay +- this many samples (1 ms)
SILENT = 1e-7  # mean square below which there is nothing to explain (digital silence, a muted input)
# Speech the canceller let through is echo when the speaker's signal explains at least this fraction
# of what it typically explains of the assistant alone; the user is heard through the echo when it
# explains less than NEAR_END_RATIO of that. bench_echo on the null sink's loop: echo alone p50 1.0
# (p05 0.62 while PulseAudio drifts the delay); the user over it at 0 dB p50 0.55, p05 0.14. With
# both: speech started by echo alone after a 200 ms delay jump 10 -> 0 over 5 replies, barge-in
# heard after 0.20 -> 0.13 s (p50); on another day's loops 6 -> 3 after the jump and 3 -> 1 as played
# (AEC3 restarted for each reply: the first reply of a session; converged, bench_voice sees none).
ECHO_RATIO = 0.8
NEAR_END_RATIO = 0.5
# The user is heard over the echo only when, besides, the power the echo leaves unexplained is at least
# this share of the echo's typical power: as the echo fades after the assistant stops, or between its
# words, or when the loop's delay jumps inside the window, its misfit also explains little of the
# microphone, but has little power. Offline on the null sink's loop (5 replies, 5 cut-ins at 0 / -6 /
# -10 dB): holds on clear speech came 40 ms sooner (p50 at 0 dB) with no more holds on echo alone
# (then for a hold at the first frame of such speech). Required for the double-talk path too: on 48
# audio-test recordings (9 s of the assistant alone, fresh sessions) holds 77 -> 31, barge-ins 2 -> 0;
# cut-ins held p50 0.092 -> 0.095 s at 0 dB, 0.140 -> 0.146 at -6, 0.23 -> 0.26 at -10 (missed 8 -> 9 of 44).
CLEAR_POWER_RATIO = 0.25
BASELINE_WEIGHT = 0.05  # per frame: the typical score follows the room within ~20 frames (0.6 s)
# Sound over the echo (`sound_over_echo`), judged in PIECE-sample pieces whatever size the blocks come in
# (the device-rate resampler hands on ~540 samples every other block): a piece's residual, once the fitted
# echo is taken out, must be ABOVE_FLOOR times what the echo typically leaves and at least RESIDUAL_SHARE
# of the piece's power (or SHARE_MARGIN times the residual's typical share, in a room whose echo the short
# filter explains less well), SUSTAIN pieces in a row (a click or a knock is shorter), the last still at
# least UNFADED of the loudest (a keystroke's ring fades within tens of ms; a voice starting does not). The
# typical values are the medians over the last TYPICAL_PIECES pieces the echo dominated. Two recordings of
# the null sink's loop (20 replies, 160 s): no fire on the assistant alone (a share of 0.05 instead: 2, at
# two glitches of the loop), 96 cut-ins mixed in at 0 / -6 / -10 dB held after 0.050 / 0.063 / 0.085 s on
# average.
PIECE = 160  # samples (10 ms)
SUSTAIN = 3
UNFADED = 0.5
ABOVE_FLOOR = 10.0
RESIDUAL_SHARE = 0.1
SHARE_MARGIN = 4.0
TYPICAL_PIECES = 100  # ~1 s
# The room's reverberant tail. The fitted filter spans 2 ms around the echo's delay: it explains the direct sound,
# not the reflections that go on for a few hundred milliseconds after each word. In a reverberant room that tail
# is most of the microphone at each word's end and in each pause, the echo explains little of it, and it sounds
# like speech: the raw-microphone branch took it for the user, suppressed by the canceller. As AEC3's reverb
# model does, the tail's power is predicted from what the speaker played before the window (each 10 ms piece's
# power, decaying 60 dB in TAIL_RT60 seconds) times a gain learnt while only the assistant is heard (the median
# power the echo leaves unexplained over that prediction); the raw microphone's speech is the user's only when it
# leaves TAIL_MARGIN times more unexplained than the tail would. Too long a decay only makes the prediction
# cautious; in a dry room the gain learnt is small and nothing changes. Offline (Hearing with AEC3 on the
# assistant's 12-s reply through made-up rooms, tests/audio/room_acoustics.py), holds on its voice alone at RT60
# 0.5 s / +5 dB, 0.4 s / +2 dB, 0.5 s / 0 dB: 2 / 8 / 10 (and a start) -> 0 / 0 / 3; cut-ins at the echo's level
# (10 in each room) started as soon as before; 6 dB under it, where most were late already, missed 1 -> 3 at +5 dB
# and 3 -> 7 at 0 dB. Used in the cleaned branch too, it cost cut-ins at the echo's level in the 0 dB room.
TAIL_RT60 = 0.6
TAIL_MARGIN = 3.0
TAIL_FRAMES = 100  # ~3 s of judged frames
REFIT_AFTER = 1600  # samples (0.1 s) between two searches for the echo's delay and filter (~2 ms each)
ECHO_FIT_FRESH = RATE  # samples (1 s): a fit of the echo alone this recent is the one kept at a hold
# The echo still arriving at a hold is taken out of what a cut-in says only where the fitted direct sound is most of
# the echo (its typical share, `_echo_alone`, at least this): in a reverberant room the fit also leans on the tail
# through the voice's own correlation, and taking it out spoiled the first word instead. bench_cut_in, 10 cut-ins at
# the echo's level, Whisper's word errors with / without: no room 0.39 / 0.37 (loop delay 0.07 s), 0.41 / 0.61
# (0.3 s); RT60 0.3 s / +10 dB (share 0.86) 0.35 / 0.28 (0.65 / 0.78 at 0.3 s); 0.5 s / +5 dB (0.67) 0.96 / 0.41
# (0.54 / 0.70). The null sink's loop (share ~1.0), bench_voice with 20 cut-ins a run: 0.24 and 0.28 against 0.45
# and 0.35.
HELD_ECHO_SHARE = 0.9


class EchoGuard:
    """Keeps the last `window + max_delay` seconds of both signals, in step, and a VAD on the raw microphone."""

    def __init__(self, vad: VadOptions, window: float = WINDOW, max_delay: float = MAX_DELAY) -> None:
        self._options = vad
        self._raw_vad = SileroVad()
        self._echo_alone = 1.0  # the typical score while only the assistant is heard
        self._echo_power = 0.0  # the typical mean square of the microphone then
        # the power the echo left unexplained over `_tail()`, in the latest frames judged the assistant's alone:
        # their median is the tail's gain (a user's first words, judged the echo's, hardly move it)
        self._tail_ratios: collections.deque[float] = collections.deque(maxlen=TAIL_FRAMES)
        self._window = round(window * RATE)
        self._lags = round(max_delay * RATE)
        self._mic = np.zeros(self._window, dtype=np.float32)
        self._ref = np.zeros(self._window + self._lags, dtype=np.float32)
        self._fft_size = 1 << int(np.ceil(np.log2(self._ref.size + self._window)))
        # the tail's decay over 1, 2, ... pieces (as many as the reference holds): a constant of `_tail`
        self._tail_decay = np.power(10.0, -6.0 * PIECE / RATE / TAIL_RT60) ** np.arange(1, self._ref.size // PIECE + 1)
        self._filter: tuple[int, np.ndarray] | None = None  # the last fit: best delay (index into ref), taps
        self._echo_filter: tuple[int, np.ndarray] | None = None  # the latest fit of a window of echo alone
        self._echo_filter_age = 0  # samples pushed since then
        self._held_filter: tuple[int, np.ndarray] | None = None  # that fit as it was at the last hold
        self._since_fit = REFIT_AFTER  # samples pushed since that fit
        self._unjudged = 0  # the newest samples not yet judged by `sound_over_echo` (less than a piece after it)
        # (residual power, its share of the piece's power) of the latest pieces the echo dominated: their medians
        # are what the fitted echo typically leaves, which a user's first syllable hardly moves
        self._typical: collections.deque[tuple[float, float]] = collections.deque(maxlen=TYPICAL_PIECES)
        self._over = 0  # pieces in a row with sound over the echo
        self._run_peak = 0.0  # the highest residual power among them

    def push(self, mic: np.ndarray, speaker: np.ndarray) -> None:
        """The raw microphone and what the speaker played over the same samples."""
        self._mic = np.concatenate([self._mic, mic])[-self._mic.size:]
        self._ref = np.concatenate([self._ref, speaker])[-self._ref.size:]
        self._unjudged = min(self._unjudged + mic.size, self._window)
        self._since_fit += mic.size
        self._echo_filter_age += mic.size

    def sound_over_echo(self) -> bool:
        """Called after each block pushed while the speaker plays: True when the samples pushed since the last
        call hold sound the speaker's echo does not explain (the user starting to speak) for SUSTAIN pieces in
        a row, counting the pieces just before them.

        Silero needs 60-130 ms of a word to call it speech (a starting "s" or "h" is not speech to it), and
        the speech-based check in `judge` a tenth of a second of it to lower the echo's share of its window:
        the residual of the fitted echo, piece by piece, shows a voice's first tens of milliseconds. It only
        holds the reply (a false start resumes it): Silero still decides whether it is speech."""
        count = self._unjudged // PIECE
        if not count:
            return False
        span = count * PIECE
        if self._filter is None or self._since_fit >= REFIT_AFTER:
            self._fit()
        typical = np.median(np.array(self._typical), axis=0) if len(self._typical) >= TYPICAL_PIECES // 4 else None
        pieces = self._judged_pieces(span, typical)
        if self._since_fit and any(over for _, _, over in pieces):
            self._fit()  # a filter fitted before the delay drifted leaves a residual too: judge with a new fit
            pieces = self._judged_pieces(span, typical)
        if not any(over for _, _, over in pieces):  # a window of echo alone: its fit is the one a hold keeps
            self._echo_filter, self._echo_filter_age = self._filter, 0
        fired = False
        for residual, power, over in pieces:
            if not over and SILENT <= power and residual < 0.5 * power:  # the echo dominated it
                self._typical.append((residual, residual / power))
            self._over = self._over + 1 if over else 0
            self._run_peak = max(self._run_peak, residual) if over else 0.0
            fired = fired or (self._over >= SUSTAIN and residual >= UNFADED * self._run_peak)
        self._unjudged -= span
        return fired

    @staticmethod
    def _stands_out(residual: float, power: float, typical: np.ndarray | None) -> bool:
        """A piece's residual is well above what the echo typically leaves, in power and in share."""
        if typical is None or power < SILENT:
            return False  # (too little of the echo seen yet to know what it leaves; or nothing heard)
        floor, share = typical
        return residual >= ABOVE_FLOOR * floor and residual >= max(RESIDUAL_SHARE, SHARE_MARGIN * share) * power

    def _judged_pieces(self, span: int, typical: np.ndarray | None) -> list[tuple[float, float, bool]]:
        """(residual power, power, whether it stands out) of each piece of `_residual_pieces(span)`."""
        return [(residual, power, self._stands_out(residual, power, typical))
                for residual, power in self._residual_pieces(span)]

    def _residual_pieces(self, span: int) -> list[tuple[float, float]]:
        """(residual power, power) of each piece of the `span` microphone samples that end `_unjudged - span`
        before the newest, the fitted echo taken out (nothing taken out before any fit)."""
        end = self._window - (self._unjudged - span)
        mic = self._mic[end - span:end].astype(np.float64)
        residual = mic if self._filter is None else mic - self._fitted_echo(self._filter, end, span)
        return list(zip(np.mean(np.square(residual).reshape(-1, PIECE), axis=1).tolist(),
                        np.mean(np.square(mic).reshape(-1, PIECE), axis=1).tolist()))

    def echo_share(self) -> float:
        """Share of the last window's microphone energy explained by the speaker signal at its best delay:
        found by normalised cross-correlation, then fitted with a short filter around that delay (least
        squares), which absorbs fractional delays and the resamplers' filtering on the way."""
        return self._fit()[0]

    def _fit(self) -> tuple[float, float]:
        """`echo_share` and the window's mean square (the microphone's power), from one pass."""
        mic, ref = self._mic.astype(np.float64), self._ref.astype(np.float64)
        mic_energy = float(np.dot(mic, mic))
        power = mic_energy / mic.size
        if mic_energy < SILENT * mic.size:
            return 0.0, power
        spectrum = np.conj(np.fft.rfft(mic, self._fft_size)) * np.fft.rfft(ref, self._fft_size)
        corr = np.fft.irfft(spectrum, self._fft_size)[: self._lags + 1]  # corr[j]: mic against ref[j:j+window]
        squares = np.concatenate([[0.0], np.cumsum(ref * ref)])
        ref_energy = squares[self._window: self._window + self._lags + 1] - squares[: self._lags + 1]
        score = np.where(ref_energy > SILENT * self._window, np.square(corr) / np.maximum(ref_energy, 1e-30), 0.0)
        score[:TAPS] = score[self._lags + 1 - TAPS:] = 0.0  # room for the filter on both sides
        best = int(np.argmax(score))
        self._since_fit = 0
        if score[best] == 0.0:
            self._filter = None
            return 0.0, power
        shifted = np.lib.stride_tricks.sliding_window_view(ref, self._window)[best - TAPS: best + TAPS + 1]
        # the normal equations, by einsum rather than lstsq or @: those go to OpenBLAS, whose threads, fighting
        # llama.cpp's spinning ones for 2 cores, stalled this (audio) thread for up to 2 s in bench_voice
        gram = np.einsum("it,jt->ij", shifted, shifted) + 1e-9 * np.eye(len(shifted))
        cross = np.einsum("it,t->i", shifted, mic)
        taps = np.linalg.solve(gram, cross)
        self._filter = (best, taps)
        explained = float(np.dot(taps, cross))  # energy of the fitted echo
        return min(1.0, max(0.0, explained / mic_energy)), power

    def hold_fit(self) -> None:
        """Keep the echo's fit as it is when the reply is held: what the speaker played just before still reaches
        the microphone for the loop's delay, under the user's first words, and `without_held_echo` takes it out.
        (Fits made after the hold are not of the echo: the speaker falls silent, and the search for a delay then
        matches the user's voice against whatever was played up to a second before.) An older fit of the echo
        alone (none was judged for a while: only speech holds the reply after two false starts by sound) may
        have the loop's delay of then, which drifts: the fit of the moment is kept instead."""
        recent = self._echo_filter is not None and self._echo_filter_age <= ECHO_FIT_FRESH
        if self._echo_alone < HELD_ECHO_SHARE:
            self._held_filter = None  # a reverberant room: the microphone as it is
        else:
            self._held_filter = self._echo_filter if recent else self._filter

    def without_held_echo(self, raw: np.ndarray, behind: int) -> np.ndarray:
        """`raw`, microphone samples ending `behind` samples before the newest pushed, less the echo the fit kept
        by `hold_fit` predicts from what the speaker played (its direct sound: a room's tail stays)."""
        end = self._window - behind
        if self._held_filter is None or end < raw.size or end - raw.size + self._held_filter[0] < TAPS:
            return raw  # (no fit kept, or the samples are not within the window kept)
        return (raw - self._fitted_echo(self._held_filter, end, raw.size)).astype(np.float32)

    def _fitted_echo(self, fit: tuple[int, np.ndarray], end: int, span: int) -> np.ndarray:
        """The echo `fit` (best delay, taps) predicts from what the speaker played, over the `span` microphone
        samples that end at window index `end`."""
        best, taps = fit
        start = end - span + best - TAPS
        shifted = np.lib.stride_tricks.sliding_window_view(self._ref[start: start + span + 2 * TAPS], span)
        return np.einsum("i,it->t", taps, shifted.astype(np.float64))

    def _tail(self) -> float:
        """The mean square over the window of the reverberant tail of what the speaker played before each of its
        pieces, per unit of tail gain: each earlier piece's power at the fitted delay, decaying exponentially."""
        if self._filter is None:
            return 0.0
        best = self._filter[0]
        ref = self._ref[: best + self._window]  # at the fitted delay: its last `window` samples are the window's
        pieces = ref.size // PIECE
        powers = np.mean(np.square(ref[ref.size - pieces * PIECE:].astype(np.float64)).reshape(pieces, PIECE), axis=1)
        # [i - 1]: the tail during piece i of what the pieces before it played
        tails = np.convolve(powers, self._tail_decay[:pieces])
        return float(np.mean(tails[max(pieces - self._window // PIECE - 1, 0): pieces - 1]))  # (a delay near max_delay)

    def _tail_gain(self) -> float:
        return float(np.median(self._tail_ratios)) if len(self._tail_ratios) >= TAIL_FRAMES // 10 else 0.0

    def judge(self, probability: float, raw_frame: np.ndarray, assistant_speaking: bool) -> float:
        """The speech probability of a frame of the cleaned microphone, corrected for what the echo explains."""
        raw = self._raw_vad(raw_frame)
        if probability < self._options.release and raw < self._options.threshold:
            return probability  # nobody is speaking: nothing to tell apart
        share, power = self._fit()
        if probability >= self._options.threshold:  # the canceller let speech through
            return 0.0 if share >= ECHO_RATIO * self._echo_alone else probability
        # the canceller removed the speech the raw microphone has. The user over the echo: speech the echo explains
        # much less of than usual, with a voice's power left unexplained (a window the loop's delay jumped in, or a
        # dropout to zeros, is explained badly too), and more of it than the room's reverberation leaves
        unexplained, tail = (1.0 - share) * power, self._tail()
        near_end = (share < NEAR_END_RATIO * self._echo_alone
                    and self._echo_power > 0  # (the echo's power is known)
                    and unexplained >= CLEAR_POWER_RATIO * self._echo_power
                    and unexplained >= TAIL_MARGIN * self._tail_gain() * tail)
        if assistant_speaking and near_end:
            return raw  # the user, suppressed with the echo during double talk
        self._echo_alone += BASELINE_WEIGHT * (share - self._echo_alone)
        self._echo_power += BASELINE_WEIGHT * (power - self._echo_power)
        if tail > SILENT:
            self._tail_ratios.append(unexplained / tail)
        return probability

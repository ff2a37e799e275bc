"""One duplex PortAudio stream: the microphone and the speaker at once, at the device's rate.

    player = Player()
    stream = DuplexStream(mic, speaker, player, on_audio)   # on_audio(mic16k, speaker16k) on the audio worker thread
    stream.start()
    player.play(samples16k, tag="Hello there.")             # queued after what is playing
    player.pause()                                          # hold playback while a possible barge-in is judged
    player.resume()                                         # it was not one: carry on from the same sample
    player.stop()                                           # barge-in: drop everything not yet played, at once

PortAudio's callback only copies: what it recorded and what it just handed to the speaker go to a
queue, and a worker thread resamples both to 16 kHz and calls `on_audio`. The speaker block is the
echo canceller's reference, so the two arrive in step. While `relaxed()` says nothing needs a fast
reaction (nobody speaks, nothing plays), the worker wakes once per ~120 ms for the blocks gathered
meanwhile: on a core that dozes between 20 ms wake-ups every burst of work runs several times slower
than warm (Silero: ~0.55 ms a frame vs ~0.09 ms back to back), and idle listening is such bursts.

Playback pulls from the `Player`, whose `stop()` empties the queue under a lock: nothing of a stopped
reply reaches the device afterwards (PortAudio's own output buffer, `output_latency`, still drains,
which is why that latency is kept small). The player counts what each item has played, so the
conversation keeps what was heard. `pause()` holds playback where it is (the callback sends silence
and nothing advances) until `resume()` or `stop()`: the assistant goes quiet at the first frames of
what may be the user cutting in, and carries on from the same sample if it was not.

A device that disappears shows up as callbacks that stop coming: the worker reopens the stream
with a back-off and reports each failure through `on_status` instead of crashing. A stream PortAudio
ends by itself (on PulseAudio's ALSA plugin its thread can fail in ALSA's poll, `ContinuePoll`, and
quit, even before the first callback) is reopened as soon as the worker next wakes, not after the
long wait a new stream is allowed for its first callback (FIRST_CALLBACK). A stream that
runs slow is reopened too: on PulseAudio's ALSA plugin about one stream in twenty hit an underrun at
start and never recovered (callbacks at ~0.65x real time, choppy sound, a third of a core spinning).
So is a stream whose callback thread spins: after an output underflow in the middle of a reply (the
callback late while Whisper, the model and the terminal app's drawing shared 2 cores) PortAudio's
thread on that plugin kept polling at ~99% of a core while delivering every block on time, and
every later turn in the app was slow (end of speech -> first audio 1.1-2.2 s instead of ~0.9). The
callback reads its own thread's CPU time; a stream that spends over MAX_CALLBACK_CPU of a core is
reopened at the next moment nobody speaks and nothing plays (`between_turns`), without a message. Not
at the next `relaxed` one, which also waits out the echo's tail and the timing of a pause: in a brisk
conversation (bench_voice: a question 0.8 s after each reply) that never came, and on a machine whose
stream spun six times a run, end of speech -> first audio p95 was 3.9 s and barge-in p95 0.57 s.

Those underflows came from Python's garbage collector: a full collection holds the GIL, which the
callback needs, for 30-170 ms on a loaded 2-core machine (in the app: 2-3 underflows in 6 turns, each
at a collection of 30-170 ms). So the stream pauses automatic collection while anything is afoot (not
`relaxed`: someone speaks, a reply plays or echoes) and lets it run again when nothing is, and
`start()` freezes what exists by then (the models, the app), which later collections then skip.
"""

from __future__ import annotations

import collections
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.audio.devices import AudioUnavailable, Device, portaudio

log = logging.getLogger(__name__)

RATE = 16_000  # the rate everything after the device works at
# seconds the worker lets blocks gather while relaxed: one wake-up per ~six 20 ms blocks (idle listening on
# the null sink: 3.1-3.6% of a core, 3.9-4.0% at 0.04 s)
RELAXED_WAIT = 0.1
STALL = 0.5  # seconds without a callback after which the stream is considered lost and reopened
# seconds a new stream may take to its first callback: PulseAudio started a null sink's monitor ~1.5-2 s late
# when nothing else read it (a Bluetooth headset takes as long), and reopening it then only started the wait again
FIRST_CALLBACK = 3.0
CLOSE_TIMEOUT = 1.0  # seconds to wait for PortAudio to close a stream before abandoning it
PACE_WINDOW = 3.0  # seconds over which the callbacks' pace is checked
MIN_PACE = 0.8  # a stream delivering less than this share of real time is stuck and reopened
# share of a core above which the callback thread is spinning, not working: ~1-2% normally (20 ms blocks)
MAX_CALLBACK_CPU = 0.5
# The callback period. PortAudio's ALSA output buffer holds 3 periods (60 ms at 20 ms, 192 ms at 64 ms) and
# a barge-in waits for it to drain, so periods stay short though each costs CPU: a bare stream with an
# empty callback takes ~1.5-2% of one core at 20 ms on the pulse null sink (16 ms: ~2.7%); idle listening,
# with the worker's relaxed wake-ups, 3.1-3.6% (5.1-6.1% waking for every block).
BLOCK_SECONDS = 0.02


@dataclass
class Playing:
    """One queued item of speech: its samples at the device rate and how much of it has been played."""

    samples: np.ndarray
    rate: int  # the device's sample rate
    tag: object  # the caller's handle (e.g. the text chunk it speaks)
    played: int = 0  # samples handed to the device so far
    on_start: Callable[[Playing], None] | None = None
    on_done: Callable[[Playing], None] | None = None

    @property
    def fraction(self) -> float:
        return self.played / max(1, self.samples.size)


class Player:
    """The speaker's queue. `play` appends; the audio callback pulls; `stop` drops the rest at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[Playing] = collections.deque()
        self.paused = False
        self.device_rate = RATE  # set by the stream that plays it
        self.output_latency = 0.0  # seconds between handing a sample to PortAudio and it leaving the speaker

    def play(self, samples: np.ndarray, rate: int, tag: object = None, *,
             on_start: Callable[[Playing], None] | None = None,
             on_done: Callable[[Playing], None] | None = None) -> Playing:
        """Queue mono float32 `samples` at `rate`. `on_start(item)` and `on_done(item)` run on the audio
        thread (keep them short) when its first sample is handed to the device and when its last is."""
        item = Playing(self._to_device(samples, rate), self.device_rate, tag, on_start=on_start, on_done=on_done)
        with self._lock:
            self._queue.append(item)
        return item

    def _to_device(self, samples: np.ndarray, rate: int) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if rate == self.device_rate:
            return samples
        import soxr

        return soxr.resample(samples, rate, self.device_rate).astype(np.float32)

    def pause(self) -> None:
        """Hold playback at the current sample; the queue is kept."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def stop(self) -> list[Playing]:
        """Drop everything queued or half-played (a pause ends with it); returns the dropped items (with how
        much each played)."""
        with self._lock:
            dropped = list(self._queue)
            self._queue.clear()
            self.paused = False
        return dropped

    def queued(self) -> list[object]:
        """The tags of the items not yet played to their end, in order."""
        with self._lock:
            return [item.tag for item in self._queue]

    def pull(self, out: np.ndarray) -> None:
        """Fill `out` (the device block) with queued speech, zeros after it. Runs in the audio callback."""
        filled, started, done = 0, [], []
        with self._lock:
            while filled < out.size and self._queue and not self.paused:
                item = self._queue[0]
                if item.played == 0:
                    started.append(item)
                n = min(out.size - filled, item.samples.size - item.played)
                out[filled:filled + n] = item.samples[item.played:item.played + n]
                item.played += n
                filled += n
                if item.played >= item.samples.size:
                    done.append(self._queue.popleft())
        out[filled:] = 0.0
        for item in started:
            if item.on_start is not None:
                item.on_start(item)
        for item in done:
            if item.on_done is not None:
                item.on_done(item)


class DuplexStream:
    """The microphone and the speaker on one PortAudio stream, handed on as 16 kHz blocks in step."""

    def __init__(self, mic: Device, speaker: Device, player: Player,
                 on_audio: Callable[[np.ndarray, np.ndarray], None],
                 on_status: Callable[[str], None] = lambda message: None,
                 relaxed: Callable[[], bool] = lambda: False,
                 between_turns: Callable[[], bool] | None = None) -> None:
        """`relaxed()`: nothing needs a fast reaction (blocks may gather, the garbage collector may run);
        `between_turns()`: nobody speaks and nothing plays, so a reopened stream's gap cuts no one (default:
        `relaxed`)."""
        self.mic, self.speaker = mic, speaker
        self.rate = int(speaker.sample_rate)
        self.player = player
        player.device_rate = self.rate
        self._on_audio = on_audio
        self._on_status = on_status
        self._relaxed = relaxed
        self._between_turns = between_turns or relaxed
        self._blocks: queue.SimpleQueue[tuple[np.ndarray, np.ndarray] | None] = queue.SimpleQueue()
        self._stream = None
        self._running = False
        self._started = False  # the stream opened last has called back
        self._last_callback = 0.0
        self._delivered = 0  # frames the callbacks delivered since `_pace_since`
        self._pace_since = 0.0
        self._callback_cpu = 0.0  # the callback thread's CPU seconds at its latest call...
        self._callback_cpu_since = 0.0  # ...and at the first call since `_pace_since`
        self._spinning = False  # the callback thread spins: reopen at the next relaxed moment
        self._ended = False  # PortAudio ended the stream opened last by itself: reopen now
        self._worker: threading.Thread | None = None
        self._mic_resampler = self._ref_resampler = None
        self.callbacks = 0
        # set once the microphone's first block has been handed on: a null sink's monitor or a Bluetooth
        # headset starts ~2 s after the stream, and words said before then are lost, so say "listening" after
        self.microphone_live = threading.Event()

    def start(self) -> None:
        """Open the device and start the worker; raises AudioUnavailable/EdgeAIError if it cannot open at all."""
        gc.collect()
        gc.freeze()  # what is loaded by now lives as long as the process: no collection need scan it again
        self._open()
        self._running = True
        self._worker = threading.Thread(target=self._work, name="audio-duplex", daemon=True)
        self._worker.start()

    def close(self) -> None:
        self._running = False
        self._blocks.put(None)
        if self._worker is not None:
            self._worker.join(timeout=5)
        self._close_stream()
        gc.enable()

    def _open(self) -> None:
        import soxr

        sd = portaudio()
        self._mic_resampler = soxr.ResampleStream(self.rate, RATE, 1, dtype="float32")
        self._ref_resampler = soxr.ResampleStream(self.rate, RATE, 1, dtype="float32")
        self._started = self._spinning = self._ended = False
        try:
            # latency "high": on PulseAudio's ALSA plugin "low" stalls or dies (ALSA ContinuePoll); the
            # block size keeps the callback period, and so the barge-in reaction, near 20 ms anyway
            stream = sd.Stream(samplerate=self.rate, blocksize=round(self.rate * BLOCK_SECONDS),
                               device=(self.mic.index, self.speaker.index), channels=(1, 1), dtype="float32",
                               latency="high", callback=self._callback,
                               finished_callback=lambda: self._on_finished(stream))
            self._stream = stream
            stream.start()
        except sd.PortAudioError as exc:
            self._close_stream()
            raise AudioUnavailable(f"cannot open the audio devices ({self.mic.name} / {self.speaker.name}): "
                                   f"{exc}") from exc
        self.player.output_latency = float(stream.latency[1])
        self._last_callback = time.monotonic()

    def _close_stream(self) -> None:
        """Stop and free the stream. A stream whose sound server died can block inside PortAudio for
        good: it is then left to its thread, and PortAudio's exit handler (which would block the
        same way at interpreter exit) is dropped."""
        stream, self._stream = self._stream, None
        if stream is None:
            return

        def close() -> None:
            try:
                stream.abort()
                stream.close()
            except Exception:  # a device that vanished fails to close too; nothing else to free
                log.debug("closing the audio stream failed", exc_info=True)

        closer = threading.Thread(target=close, name="audio-close", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT)
        if closer.is_alive():
            log.warning("the audio stream did not close within %.0f s; abandoning it", CLOSE_TIMEOUT)
            import atexit

            sd = portaudio()
            atexit.unregister(sd._exit_handler)

    def _on_finished(self, stream: object) -> None:
        """PortAudio's thread, as a stream stops: one this object closed is no longer `_stream`."""
        if stream is self._stream:
            self._ended = True

    def _callback(self, indata: np.ndarray, outdata: np.ndarray, frames: int, time_info: object,
                  status: object) -> None:
        self.player.pull(outdata[:, 0])
        self._blocks.put((indata[:, 0].copy(), outdata[:, 0].copy()))
        now = time.monotonic()
        self._callback_cpu = time.thread_time()
        if self._started:
            self._delivered += frames
        else:  # the pace is measured from the first callback on, not from a slow start (FIRST_CALLBACK)
            self._started, self._pace_since, self._delivered = True, now, 0
            self._callback_cpu_since = self._callback_cpu
        self._last_callback = now
        self.callbacks += 1

    def _work(self) -> None:
        backoff = 0.2
        while self._running:
            try:
                block = self._blocks.get(timeout=STALL)
            except queue.Empty:
                block = ()
            if block is None:
                return
            if block:
                relaxed = self._relaxed()
                if relaxed != gc.isenabled():  # collections wait while anything is afoot
                    (gc.enable if relaxed else gc.disable)()
                if relaxed:
                    time.sleep(RELAXED_WAIT)
                    block, closing = self._gather(block)
                    if closing:
                        return
                mic, ref = block
                try:
                    self._on_audio(self._mic_resampler.resample_chunk(mic), self._ref_resampler.resample_chunk(ref))
                    if not self.microphone_live.is_set():  # (set() takes a lock: not at every block)
                        self.microphone_live.set()
                except Exception as exc:  # a failing consumer must not silence the microphone for good
                    log.exception("processing microphone audio failed")
                    self._on_status(f"audio processing failed: {exc}")
                backoff = 0.2
                pace = self._pace()
                if pace is not None and pace[0] < MIN_PACE:
                    self._reopen(f"audio device running at {pace[0]:.0%} of real time ({self.mic.name} / "
                                 f"{self.speaker.name}); reopening", 0.0)
                elif pace is not None and pace[1] > MAX_CALLBACK_CPU and not self._spinning:
                    log.warning("the audio callback's thread spins (%.0f%% of a core); reopening the stream when "
                                "nothing is said or played", 100 * pace[1])
                    self._spinning = True
                if self._spinning and self._between_turns():
                    log.warning("reopening the audio stream whose callback thread spun")
                    self._reopen(None, 0.0)
                continue
            if self._ended:
                self._reopen(f"audio stream ended unexpectedly ({self.mic.name} / {self.speaker.name}); "
                             f"reopening in {backoff:.1f} s", backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if time.monotonic() - self._last_callback < (STALL if self._started else FIRST_CALLBACK):
                continue
            self._reopen(f"audio device stopped responding ({self.mic.name} / {self.speaker.name}); "
                         f"reopening in {backoff:.1f} s", backoff)
            backoff = min(backoff * 2, 5.0)

    def _gather(self, first: tuple[np.ndarray, np.ndarray]) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
        """`first` and every block queued after it as one block; True when close() was asked meanwhile."""
        blocks, closing = [first], False
        while True:
            try:
                block = self._blocks.get_nowait()
            except queue.Empty:
                break
            if block is None:
                closing = True
                break
            blocks.append(block)
        return (np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])), closing

    def _pace(self) -> tuple[float, float] | None:
        """Over the last PACE_WINDOW seconds (None until one has passed): frames delivered per frame of real
        time, and the share of a core the callback's thread used."""
        now = time.monotonic()
        elapsed = now - self._pace_since
        if elapsed < PACE_WINDOW:
            return None
        pace = self._delivered / (elapsed * self.rate)
        cpu = (self._callback_cpu - self._callback_cpu_since) / elapsed
        self._delivered, self._pace_since, self._callback_cpu_since = 0, now, self._callback_cpu
        return pace, cpu

    def _reopen(self, why: str | None, wait: float) -> None:
        """Close the stream and open it again after `wait` seconds; `why` (None: say nothing) is reported."""
        if why is not None:
            self._on_status(why)
        self._close_stream()
        time.sleep(wait)
        try:
            self._open()
            if why is not None:
                self._on_status("audio device reopened")
        except Exception as exc:  # the device is still gone: keep trying, keep saying so
            self._on_status(f"audio device unavailable: {exc}")
            self._last_callback = 0.0

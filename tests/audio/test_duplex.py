"""The duplex stream, the player and echo cancellation on a real PulseAudio null sink: what is played
comes back on the microphone after the loop's delay, like a laptop's speaker heard by its microphone."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
from pulse import _pactl

from convert.onnx.speech import speak
from runtime.audio.devices import pick_device, portaudio
from runtime.audio.duplex import (
    BLOCK_SECONDS,
    FIRST_CALLBACK,
    MAX_CALLBACK_CPU,
    PACE_WINDOW,
    RELAXED_WAIT,
    STALL,
    DuplexStream,
    Player,
)
from runtime.audio.echo import EchoCanceller, steady_erle_db
from runtime.audio.hearing import Hearing
from runtime.audio.selftest import analyse
from runtime.audio.vad import SpeechStarted

pytestmark = pytest.mark.slow


class Recorder:
    def __init__(self) -> None:
        self.mic: list[np.ndarray] = []
        self.ref: list[np.ndarray] = []
        self.lock = threading.Lock()

    def __call__(self, mic: np.ndarray, ref: np.ndarray) -> None:
        with self.lock:
            self.mic.append(mic)
            self.ref.append(ref)

    def audio(self) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            return np.concatenate(self.mic), np.concatenate(self.ref)


def open_stream(on_audio, player: Player | None = None, **options) -> tuple[DuplexStream, Player]:
    """A started stream on the default devices; `options` go to DuplexStream (on_status, relaxed)."""
    player = player or Player()
    stream = DuplexStream(pick_device("", "input"), pick_device("", "output"), player, on_audio, **options)
    stream.start()
    return stream, player


def play_and_wait(player: Player, samples: np.ndarray, tail: float = 0.5) -> None:
    done = threading.Event()
    player.play(samples, 16000, on_done=lambda item: done.set())
    assert done.wait(samples.size / 16000 + 5), "the player never finished"
    time.sleep(tail)


def test_what_is_played_comes_back_on_the_microphone(room):
    recorder = Recorder()
    stream, player = open_stream(recorder)
    try:
        time.sleep(0.3)
        play_and_wait(player, speak("Testing the loop between the speaker and the microphone."))
    finally:
        stream.close()
    mic, ref = recorder.audio()
    check = analyse(mic, ref)
    assert 0 < check.delay_ms < 500
    assert check.echo_db > -10  # the null sink's monitor returns the signal at full level
    assert stream.rate == pick_device("", "output").sample_rate


def test_echo_cancellation_removes_the_assistants_voice_from_the_loop(room):
    recorder = Recorder()
    stream, player = open_stream(recorder)
    try:
        time.sleep(0.3)
        play_and_wait(player, np.concatenate([speak("Echo cancellation needs a few seconds of speech to converge "
                                                    "on the delay of this loop, and then it should remove it."),
                                              speak("Everything the assistant says must vanish from the microphone.",
                                                    voice="en-gb")]))
    finally:
        stream.close()
    mic, ref = recorder.audio()
    cleaned = EchoCanceller().process(mic, ref)
    # the target on the loop, in the typical half second of the second half (steady_erle_db)
    assert mic.size // 2 >= 3 * 8000
    assert steady_erle_db(mic[mic.size // 2:], cleaned[mic.size // 2:]) >= 20


def test_a_stream_running_slow_is_reopened_and_runs_at_real_time_again(room):
    """A callback that takes 1.5 blocks' time (the pace of the stuck ALSA stream seen at ~1 start in 20) for
    a little longer than the pace window from its first call: the stream is reopened once and then delivers
    real time."""
    slow_until = []

    class SlowPlayer(Player):
        def pull(self, out: np.ndarray) -> None:
            if not slow_until:
                slow_until.append(time.monotonic() + PACE_WINDOW + 0.5)
            if time.monotonic() < slow_until[0]:
                time.sleep(1.5 * BLOCK_SECONDS)
            super().pull(out)

    statuses: list[str] = []
    stream, _ = open_stream(Recorder(), SlowPlayer(), on_status=statuses.append)
    try:
        deadline = time.monotonic() + 4 * PACE_WINDOW
        while not any("of real time" in s for s in statuses) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("of real time" in s for s in statuses), statuses
        time.sleep(max(0.0, slow_until[0] - time.monotonic()) + 0.5)
        before, started = stream.callbacks, time.monotonic()
        time.sleep(2.0)
        pace = (stream.callbacks - before) * BLOCK_SECONDS / (time.monotonic() - started)
    finally:
        stream.close()
    assert pace > 0.9
    assert sum("of real time" in s for s in statuses) == 1, statuses


def test_a_stream_portaudio_ends_by_itself_is_reopened_at_once(room):
    """PortAudio's thread quits on its own (on PulseAudio's ALSA plugin it fails in ALSA's poll now and then,
    even before the first callback; here the first callback aborts the stream, a fault injected at the
    callback): the stream is reopened at the worker's next wake-up and said so, not taken for a slow start
    and waited for (FIRST_CALLBACK), and the new stream runs at real time."""
    aborted: list[bool] = []

    class AbortingPlayer(Player):
        def pull(self, out: np.ndarray) -> None:
            if not aborted:
                aborted.append(True)
                raise portaudio().CallbackAbort
            super().pull(out)

    statuses: list[str] = []
    stream, _ = open_stream(Recorder(), AbortingPlayer(), on_status=statuses.append)
    try:
        deadline = time.monotonic() + FIRST_CALLBACK + 2
        while "audio device reopened" not in statuses and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        before, started = stream.callbacks, time.monotonic()
        time.sleep(2.0)
        pace = (stream.callbacks - before) * BLOCK_SECONDS / (time.monotonic() - started)
    finally:
        stream.close()
    assert aborted
    # (the ALSA plugin's own failure may end the new stream too, now and then: each end is followed by a reopening)
    ends = ["audio stream ended unexpectedly", "audio device reopened"]
    told = [s.split(" (")[0] for s in statuses]
    assert told and told == ends * (len(told) // 2), statuses
    assert pace > 0.9


def test_a_stream_whose_callback_thread_spins_is_reopened_when_nothing_is_said_or_played(room):
    """The callback's thread burning most of a core while every block comes on time (PortAudio polling in a
    loop on PulseAudio's ALSA plugin after an underflow, which cannot be caused at will: here the callback
    busy-waits 70% of each block for a little longer than the pace window, a fault injected at the callback).
    The stream is not reopened while someone speaks or a reply plays (it would be cut), then is, once,
    between turns, though never relaxed (a brisk conversation), without a message to the user; the new
    stream runs at real time."""
    spin_until: list[float] = []

    class SpinningPlayer(Player):
        def pull(self, out: np.ndarray) -> None:
            if not spin_until:
                spin_until.append(time.monotonic() + PACE_WINDOW + 0.5)
            if time.monotonic() < spin_until[0]:
                end = time.perf_counter() + 0.7 * BLOCK_SECONDS
                while time.perf_counter() < end:
                    pass
            super().pull(out)

    assert 0.7 > MAX_CALLBACK_CPU
    statuses: list[str] = []
    between_turns = threading.Event()
    stream, _ = open_stream(Recorder(), SpinningPlayer(), on_status=statuses.append, relaxed=lambda: False,
                            between_turns=between_turns.is_set)
    try:
        first = stream._stream
        time.sleep(2 * PACE_WINDOW + 0.5)  # the spin is seen at the end of the first window; a turn goes on
        assert stream._stream is first
        between_turns.set()
        deadline = time.monotonic() + PACE_WINDOW
        while stream._stream is first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stream._stream is not first and stream._stream is not None
        reopened = stream._stream
        time.sleep(0.5)
        before, started = stream.callbacks, time.monotonic()
        time.sleep(PACE_WINDOW + 0.5)  # a whole window of the new stream: not reopened again
        pace = (stream.callbacks - before) * BLOCK_SECONDS / (time.monotonic() - started)
        assert stream._stream is reopened
    finally:
        stream.close()
    assert pace > 0.9
    assert statuses == []


def test_garbage_collection_waits_while_anything_is_afoot_and_what_was_loaded_is_frozen(room):
    """A full collection holds the GIL the callback needs for 30-170 ms on a loaded machine: an output
    underflow. While the conversation is not relaxed automatic collection is off; it is on again once
    nothing is said or played, and after close. What existed before the stream started is frozen."""
    relaxed = threading.Event()
    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    stream, _ = open_stream(Recorder(), relaxed=relaxed.is_set)
    try:
        assert gc.get_freeze_count() > frozen_before
        time.sleep(0.5)
        assert not gc.isenabled()
        relaxed.set()
        time.sleep(0.5)
        assert gc.isenabled()
        relaxed.clear()
        time.sleep(0.5)
        assert not gc.isenabled()
    finally:
        stream.close()
        gc.unfreeze()  # the rest of the test session collects as usual
    assert gc.isenabled()


def test_a_stream_slow_to_start_is_waited_for_not_reopened(room):
    """PulseAudio starts a null sink's monitor that nothing else reads ~1.7-2 s late (a Bluetooth headset
    takes as long): the stream is waited for, neither reported as stopped and reopened (twice, before) nor,
    once running, as slow."""
    module = _pactl("load-module", "module-null-sink", "sink_name=coldsink").strip()
    _pactl("set-default-sink", "coldsink")
    _pactl("set-default-source", "coldsink.monitor")
    statuses: list[str] = []
    first_block: list[float] = []
    opened = time.monotonic()
    try:
        stream, _ = open_stream(lambda mic, ref: first_block or first_block.append(time.monotonic() - opened),
                                on_status=statuses.append)
        try:
            time.sleep(FIRST_CALLBACK + PACE_WINDOW + 0.5)  # past the wait and a whole pace window after it
            before, since = stream.callbacks, time.monotonic()
            time.sleep(2.0)
            pace = (stream.callbacks - before) * BLOCK_SECONDS / (time.monotonic() - since)
        finally:
            stream.close()
    finally:
        _pactl("unload-module", module)
        room.make_default()
    if first_block and first_block[0] < STALL:
        pytest.skip(f"the sound server started this stream at once ({first_block[0]:.2f} s): nothing to wait for")
    assert first_block and not any("stopped responding" in s for s in statuses) and pace > 0.9, (statuses, pace)


def test_a_relaxed_stream_hands_over_fewer_larger_blocks_and_every_sample(room):
    sizes: list[int] = []
    relaxed = [False]
    stream, _ = open_stream(lambda mic, ref: sizes.append(mic.size), relaxed=lambda: relaxed[0])
    try:
        deadline = time.monotonic() + 5  # a just-made sink may take a reopen before its first callback
        while stream.callbacks < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        eager, sizes[:] = len(sizes), []
        eager_callbacks = stream.callbacks
        relaxed[0] = True
        callbacks = stream.callbacks
        time.sleep(2.0)
        relaxed_calls, heard = len(sizes), sum(sizes)
        delivered = (stream.callbacks - callbacks) * round(stream.rate * BLOCK_SECONDS) * 16000 / stream.rate
    finally:
        stream.close()
    assert eager >= eager_callbacks - 2  # a call per callback
    assert relaxed_calls <= (stream.callbacks - callbacks) / 2.5  # then one per ~3 callbacks
    # no sample more or less, but those in flight: a block at either end, and at the end up to a relaxed
    # wait's worth gathering in the queue (with 4 blocks allowed in all it failed 2 runs in 6)
    assert abs(heard - delivered) <= (RELAXED_WAIT + 2 * BLOCK_SECONDS) * 16000


def test_stop_drops_queued_speech_at_once(room):
    recorder = Recorder()
    stream, player = open_stream(recorder)
    try:
        time.sleep(0.3)
        item = player.play(speak("This sentence is long enough that it will be cut off well before its end."), 16000)
        while item.played == 0:
            time.sleep(0.01)
        time.sleep(0.3)
        blocks_at_stop = stream.callbacks  # on_audio gets the callbacks' blocks in order, a little later
        dropped = player.stop()
        time.sleep(0.3)
    finally:
        stream.close()
    assert dropped == [item] and 0 < item.fraction < 0.5
    after = np.concatenate(recorder.ref[blocks_at_stop + 2:])  # the block being filled at the stop may end the item
    assert np.max(np.abs(after)) < 1e-3  # silence: speech peaks near 0.5; the resampler's filter tail is ~-65 dB


@pytest.mark.parametrize("mode, false_starts", [("full", False), ("headphones", True)])
def test_the_assistants_own_voice_triggers_the_vad_only_without_echo_cancellation(room, mode, false_starts):
    heard: list[object] = []
    playing = threading.Event()
    hearing = Hearing(mode, heard.append, assistant_speaking=playing.is_set)
    stream, player = open_stream(hearing.on_audio)
    try:
        time.sleep(0.3)
        playing.set()
        play_and_wait(player, np.concatenate([speak(text, voice) for text, voice in (
            ("Hello! I am your assistant, and I am speaking through the speaker right now.", "en-us"),
            ("The microphone hears every word I say, but I must never interrupt myself.", "en-gb"),
            ("Echo cancellation is what keeps me from hearing my own voice as yours.", "en-us"))]))
        playing.clear()
    finally:
        stream.close()
    started = [e for e in heard if isinstance(e, SpeechStarted)]
    assert bool(started) is false_starts

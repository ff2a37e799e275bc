"""Silero VAD on onnxruntime and the four-state segmenter, on real espeak-ng speech and silence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from convert.onnx.speech import speak
from edge_ai.errors import EdgeAIError
from runtime.audio.vad import (
    FRAME,
    FRAME_SECONDS,
    JOIN_GAP,
    SEQUENCE_MODEL,
    SileroVad,
    SpeechStarted,
    SpeechStopped,
    VadOptions,
    VadSegmenter,
    silero_model_file,
)


def frames(samples: np.ndarray) -> list[np.ndarray]:
    n = samples.size // FRAME * FRAME
    return list(samples[:n].reshape(-1, FRAME))


def segment(samples: np.ndarray, options: VadOptions = VadOptions()) -> list[SpeechStarted | SpeechStopped]:
    vad, seg = SileroVad(), VadSegmenter(options)
    events = [seg.push(frame, vad(frame)) for frame in frames(samples)]
    return [e for e in events if e is not None]


def test_the_model_file_comes_from_the_wheel_without_importing_its_torch_package():
    import subprocess
    import sys

    path = silero_model_file()
    assert path.name == SEQUENCE_MODEL and path.stat().st_size > 1_000_000
    check = ("import sys, numpy as np; from runtime.audio.vad import SileroVad; SileroVad()(np.zeros(512, np.float32)); "
             "print('silero_vad' in sys.modules, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_frames_scored_together_get_the_probabilities_of_the_wheels_single_frame_model():
    """The sequence model scoring frames several at a time (as hearing does with the frames of a block)
    gives what silero_vad.onnx, the model Silero's own code runs frame by frame, gives: the same network."""
    import onnxruntime as ort

    audio = np.concatenate([np.zeros(8000), speak("Please turn on the kitchen lights."),
                            np.random.default_rng(0).normal(0, 0.01, 8000)]).astype(np.float32)
    chunks = list(frames(audio))
    single = ort.InferenceSession(str(silero_model_file().with_name("silero_vad.onnx")),
                                  providers=["CPUExecutionProvider"])
    state, context, expected = np.zeros((2, 1, 128), np.float32), np.zeros(64, np.float32), []
    for frame in chunks:
        x = np.concatenate([context, frame])[None, :]
        out, state = single.run(None, {"input": x, "state": state, "sr": np.array(16000, np.int64)})
        expected.append(float(out[0, 0]))
        context = frame[-64:]
    vad, got, i = SileroVad(), [], 0
    for size in itertools.cycle((1, 4, 7, 2)):  # blocks of frames of varying sizes, and single frames
        if i >= len(chunks):
            break
        got += [float(p) for p in vad.score(chunks[i:i + size])]
        i += size
    assert max(expected) > 0.9
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_speech_scores_high_and_silence_and_noise_low():
    vad = SileroVad()
    speech = speak("The quick brown fox jumps over the lazy dog near the river bank.")
    speech_p = [vad(f) for f in frames(speech)]
    vad.reset()
    rng = np.random.default_rng(0)
    noise_p = [vad(f) for f in frames(rng.normal(0, 0.01, 16000 * 2).astype(np.float32))]
    assert np.mean(np.array(speech_p) > 0.5) > 0.6
    assert max(noise_p) < 0.3


def test_segments_speech_between_silences_with_pre_roll():
    silence = np.zeros(16000, dtype=np.float32)
    speech = speak("Please turn on the kitchen lights.")
    audio = np.concatenate([silence, speech, silence])
    events = segment(audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = events
    onset = np.flatnonzero(np.abs(speech) > 0.01)[0] / 16000 + 1.0
    offset = np.flatnonzero(np.abs(speech) > 0.01)[-1] / 16000 + 1.0
    assert abs(started.start - onset) < 0.2
    assert abs(stopped.end - offset) < 0.25
    pre_roll_and_start = VadOptions().pre_roll + VadOptions().min_speech
    assert started.audio.size == pytest.approx(pre_roll_and_start * 16000, abs=2 * FRAME)


def trimmed(samples: np.ndarray) -> np.ndarray:
    """espeak-ng's clip without its leading and trailing silence."""
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0]:loud[-1] + 1]


def test_a_short_pause_inside_a_sentence_does_not_end_speech_with_a_longer_min_silence():
    pause = np.zeros(int(0.4 * 16000), dtype=np.float32)
    audio = np.concatenate([np.zeros(8000, np.float32), trimmed(speak("I want to go to")), pause,
                            trimmed(speak("the market.")), np.zeros(16000, np.float32)])
    assert [type(e) for e in segment(audio, VadOptions(min_silence=0.6))] == [SpeechStarted, SpeechStopped]
    assert [type(e) for e in segment(audio, VadOptions(min_silence=0.1))].count(SpeechStarted) == 2


def test_a_word_too_short_to_start_speech_starts_the_speech_that_follows_it():
    """espeak's "Stop" before the comma pause of "Stop, please." is one frame short of min_speech: without the
    join, speech started at "please", the pre-roll did not reach back to "Stop", and Whisper heard "Clean."."""
    silence = np.zeros(16000, dtype=np.float32)
    clip = speak("Stop, please.", "en-us")
    audio = np.concatenate([silence, clip, silence])
    onset = np.flatnonzero(np.abs(clip) > 0.01)[0] / 16000 + 1.0
    started = [e for e in segment(audio) if isinstance(e, SpeechStarted)]
    assert len(started) == 1 and abs(started[0].start - onset) < 0.1, [e.start for e in started]
    pre_roll = round(VadOptions().pre_roll / FRAME_SECONDS) * FRAME  # (whole frames)
    begin = round(started[0].start * 16000) - pre_roll  # the pre-roll before "Stop", and all after it
    np.testing.assert_array_equal(started[0].audio, audio[begin:begin + started[0].audio.size])


def test_a_short_sound_long_before_speech_is_not_joined_to_it():
    seg = VadSegmenter(VadOptions(min_speech=4 * FRAME_SECONDS, min_silence=FRAME_SECONDS, pre_roll=0.0))
    frame = np.zeros(FRAME, np.float32)
    gap = round(JOIN_GAP / FRAME_SECONDS) + 2
    probabilities = [0.9, 0.9, 0.1] + [0.1] * gap + [0.9] * 4
    events = [seg.push(frame, p) for p in probabilities]
    assert isinstance(events[-1], SpeechStarted)
    assert events[-1].start == pytest.approx((3 + gap) * FRAME_SECONDS)  # the later run alone
    near = VadSegmenter(VadOptions(min_speech=4 * FRAME_SECONDS, min_silence=FRAME_SECONDS, pre_roll=0.0))
    events = [near.push(frame, p) for p in [0.9, 0.9, 0.1, 0.1, 0.1] + [0.9] * 4]
    assert isinstance(events[-1], SpeechStarted) and events[-1].start == 0.0  # two frames, then a short gap
    assert events[-1].audio.size == 9 * FRAME  # the short run, the gap and the start


def test_speech_resumed_after_a_pause_shorter_than_the_pre_roll_says_which_of_its_samples_came_before():
    """A pre-roll reaching back over a short pause starts with frames the speech before it already handed on: a
    turn that goes on after the pause keeps `audio[repeated:]`, so no stretch of speech is heard twice (a turn
    that holds "Stop, please." with the end of "Stop" twice was transcribed "Stop! Clean!")."""
    seg = VadSegmenter(VadOptions(min_speech=2 * FRAME_SECONDS, min_silence=3 * FRAME_SECONDS,
                                  pre_roll=10 * FRAME_SECONDS))
    probabilities = [0.1] * 12 + [0.9] * 6 + [0.1] * 5 + [0.9] * 6 + [0.1] * 4  # a 5-frame pause, 3 to stop
    held: list[np.ndarray] = []  # the turn's audio, as the voice assistant gathers it
    stopped = 0
    for index, p in enumerate(probabilities):
        frame = np.full(FRAME, index, np.float32)
        event = seg.push(frame, p)
        if isinstance(event, SpeechStarted):
            assert event.repeated == (FRAME * 7 if stopped else 0)  # 10 + 2 frames back: 7 of them in the speech
            held.append(event.audio[event.repeated:])
        elif seg.in_speech:
            held.append(frame)
        stopped += isinstance(event, SpeechStopped)
    indices = np.concatenate(held)[::FRAME].astype(int).tolist()
    assert indices == list(range(indices[0], indices[-1] + 1))  # each frame once, in order, none left out
    assert stopped == 2 and (indices[0], indices[-1]) == (2, 30)  # from the pre-roll to the last frame before the stop


def test_hysteresis_holds_speech_between_the_two_thresholds():
    seg = VadSegmenter(VadOptions(threshold=0.6, release=0.3, min_speech=2 * FRAME_SECONDS, min_silence=FRAME_SECONDS))
    frame = np.zeros(FRAME, np.float32)
    probabilities = [0.9, 0.9, 0.45, 0.45, 0.45, 0.2]
    events = [seg.push(frame, p) for p in probabilities]
    assert isinstance(events[1], SpeechStarted)
    assert events[2:5] == [None, None, None]  # 0.45: below the start threshold, above the release one
    assert isinstance(events[5], SpeechStopped)


def test_bad_thresholds_and_frames_are_refused():
    with pytest.raises(EdgeAIError, match="release"):
        VadOptions(threshold=0.3, release=0.5)
    with pytest.raises(ValueError, match="512"):
        SileroVad()(np.zeros(480, np.float32))

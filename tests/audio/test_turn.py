"""End of turn from the words and, when the user supplies one, a Smart Turn format ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_ai.errors import EdgeAIError
from runtime.audio.turn import SmartTurnModel, TurnPolicy, looks_finished


@pytest.mark.parametrize("text, expected", [
    ("What time is it?", True),
    ("Turn on the lights.", True),
    ("Wow!", True),
    ("I'd like to book a flight and", False),
    ("So, um", False),
    ("I was thinking that,", False),
    ("Tell me about the", False),
    ("Can you tell me...", False),
    ("And what about you?", True),  # a question is finished even when it starts with "and"
    ("Where are you from?", True),  # a preposition can end a question
    ("What is the difference between?", False),  # Whisper's question mark on a fragment
    ("I need milk, eggs and?", False),
    ("What is 2 plus 2?", True),  # the last word is the number, not "plus" (held 1.2 s in bench_voice)
    ("Wake me up at 7.", True),
    ("Set a timer for 10", None),
    ("It costs 3 euros and", False),
    ("Was kostet das?", True),  # words outside English (and its lists) are words too
    ("the weather in Paris", None),
    ("", None),
])
def test_words_say_whether_a_sentence_is_finished(text, expected):
    assert looks_finished(text) is expected


def test_silence_needed_follows_the_words():
    policy = TurnPolicy(pause=0.3, wait=1.5)
    assert policy.silence_needed("Is it going to rain tomorrow?") == 0.3
    assert policy.silence_needed("I want to go to the market and") == 1.5
    assert 0.3 < policy.silence_needed("the weather in Paris") < 1.5


def test_pause_must_not_exceed_wait():
    with pytest.raises(EdgeAIError, match="turn_pause"):
        TurnPolicy(pause=2.0, wait=1.0)


def _smart_turn_like(path: Path, input_name: str = "input_features") -> Path:
    """A tiny ONNX classifier with Smart Turn's interface: [B, 80, 800] log-mel -> sigmoid probability.

    Its verdict is a fixed function of the features (the mean log-mel of the last 50 frames, 0.5 s),
    so speech at the very end reads as "not finished" and silence at the end as "finished".
    """
    import onnx
    from onnx import TensorProto, helper

    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [750])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [800])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [-20.0])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("Slice", [input_name, "starts", "ends", "axes"], ["tail"]),
        helper.make_node("ReduceMean", ["tail"], ["mean"], keepdims=0),
        helper.make_node("Add", ["mean", "bias"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "scale"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
    ]
    graph = helper.make_graph(nodes, "smart_turn_like",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 80, 800])],
                              [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [])],
                              initializer=[starts, ends, axes, scale, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_a_smart_turn_model_decides_from_the_audio(tmp_path):
    from convert.onnx.speech import speak

    model = SmartTurnModel(_smart_turn_like(tmp_path / "turn.onnx"))
    speech = speak("I would like to know whether")
    speech = speech[: np.flatnonzero(np.abs(speech) > 0.01)[-1] + 1]  # ends on the last word
    trailing_silence = np.concatenate([speech, np.zeros(16000, np.float32)])
    assert model.probability(trailing_silence) > model.probability(speech)
    policy = TurnPolicy(pause=0.3, wait=1.5, model=model)
    assert policy.silence_needed("I would like to know whether", trailing_silence) == 0.3
    assert policy.silence_needed("What time is it?", speech) == 1.5  # the model overrules the words


def test_a_file_that_is_not_a_smart_turn_model_is_refused(tmp_path):
    with pytest.raises(EdgeAIError, match="does not exist"):
        SmartTurnModel(tmp_path / "missing.onnx")
    with pytest.raises(EdgeAIError, match="not a Smart Turn model"):
        SmartTurnModel(_smart_turn_like(tmp_path / "other.onnx", input_name="audio"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(EdgeAIError, match="not a usable ONNX model"):
        SmartTurnModel(garbage)

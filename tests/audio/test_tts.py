"""Text-to-speech backends: real espeak-ng (checked by Whisper hearing the words), and the piper
loader/runner on a small ONNX voice built here with piper's inputs and outputs."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from speech_check import word_recall, words_heard

from edge_ai.config import Config, VoiceSettings
from edge_ai.errors import EdgeAIError, NotFoundError
from runtime.audio.tts import EspeakTTS, PiperTTS, open_tts, parse_streamed_wav


def config(**voice: object) -> Config:
    return Config(voice=VoiceSettings(**voice))  # type: ignore[arg-type]


# --- espeak-ng ------------------------------------------------------------------------------------

def test_espeak_says_the_words():
    tts = open_tts(config())
    text = "Please open the window in the kitchen."
    samples = tts.synthesize(text)
    assert tts.name == "espeak:en-us" and tts.sample_rate == 22050
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert 1.0 < len(samples) / tts.sample_rate < 5.0
    assert np.sqrt(np.mean(samples**2)) > 0.02  # speech, not silence
    assert word_recall(text, words_heard(samples, tts.sample_rate)) >= 0.8


def test_espeak_rate_changes_the_duration():
    text = "Speaking at a different speed changes how long this takes."
    normal = EspeakTTS("en-us", 1.0).synthesize(text)
    fast = EspeakTTS("en-us", 2.0).synthesize(text)
    assert 0.4 < len(fast) / len(normal) < 0.7


def test_espeak_other_voice_and_text_that_looks_like_an_option():
    tts = open_tts(config(tts_voice="en-gb"))
    samples = tts.synthesize("--help me, please")  # given on stdin: never read as an espeak-ng option
    assert len(samples) / tts.sample_rate > 0.5
    assert "help" in words_heard(samples, tts.sample_rate)


def test_espeak_empty_text_is_silence():
    assert len(EspeakTTS().synthesize("   ")) == 0


def test_espeak_unknown_voice_is_a_clear_error():
    with pytest.raises(EdgeAIError, match=r"no voice 'xx-nope'.*espeak-ng --voices"):
        open_tts(config(tts_voice="xx-nope"))


def test_espeak_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH where espeak-ng is not installed
    with pytest.raises(EdgeAIError, match=r"espeak-ng is not installed.*apt-get install espeak-ng"):
        open_tts(config())


def test_streamed_wav_header_sizes_are_ignored():
    header = (b"RIFF" + (0x7FFFF024).to_bytes(4, "little") + b"WAVE" + b"fmt " + (16).to_bytes(4, "little")
              + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
              + (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
              + b"data" + (0x7FFFF000).to_bytes(4, "little"))
    pcm = np.array([0, 16384, -16384, 32767], dtype="<i2").tobytes()
    samples, rate = parse_streamed_wav(header + pcm + b"\x01")  # a trailing odd byte is dropped
    assert rate == 16000
    np.testing.assert_allclose(samples, [0, 0.5, -0.5, 32767 / 32768])


# --- piper ----------------------------------------------------------------------------------------

HOP = 256  # samples per phoneme id at length_scale 1 in the test voice
SYMBOLS = "_^$ !'(),-.:;?abcdefhijklmnopqrstuvwxyzæçðøŋɐɑɒɔəɚɛɜɡɪɹɾʃʊʌʒʔˈˌːθ"


def build_piper_voice(folder: Path, speakers: int = 1, input_names: tuple[str, ...] = ("input", "input_lengths",
                      "scales"), write_config: bool = True) -> Path:
    """A piper-shaped ONNX voice with random weights: output [1, 1, T], T = ids * HOP * length_scale, a tone
    whose pitch depends on the phoneme ids (and speaker), so different inputs give different audio."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    ids_name, lengths_name, scales_name = input_names[:3]
    inits = [numpy_helper.from_array(rng.normal(size=(len(SYMBOLS), 8)).astype(np.float32), "table"),
             numpy_helper.from_array(np.array(HOP, dtype=np.float32), "hop"),
             numpy_helper.from_array(np.array(1, dtype=np.int64), "one_i"),
             numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero_f"),
             numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one_f"),
             numpy_helper.from_array(np.array(0.05, dtype=np.float32), "step"),
             numpy_helper.from_array(np.array([1, 1, -1], dtype=np.int64), "out_shape")]
    nodes = [
        helper.make_node("Gather", ["table", ids_name], ["emb"]),
        helper.make_node("ReduceMean", ["emb"], ["pitch0"], keepdims=0),
        helper.make_node("Gather", [scales_name, "one_i"], ["length_scale"]),
        helper.make_node("Cast", [lengths_name], ["n_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["n_f"], ["n"], keepdims=0),
        helper.make_node("Mul", ["n", "hop"], ["t0"]),
        helper.make_node("Mul", ["t0", "length_scale"], ["t1"]),
        helper.make_node("Floor", ["t1"], ["total"]),
        helper.make_node("Range", ["zero_f", "total", "one_f"], ["t"]),
        helper.make_node("Mul", ["t", "step"], ["phase"]),
    ]
    inputs = [helper.make_tensor_value_info(ids_name, TensorProto.INT64, [1, "phonemes"]),
              helper.make_tensor_value_info(lengths_name, TensorProto.INT64, [1]),
              helper.make_tensor_value_info(scales_name, TensorProto.FLOAT, [3])]
    if speakers > 1:
        inits.append(numpy_helper.from_array(rng.normal(size=(speakers,)).astype(np.float32), "speakers"))
        nodes += [helper.make_node("Gather", ["speakers", "sid"], ["spk"]),
                  helper.make_node("ReduceSum", ["spk"], ["spk0"], keepdims=0),
                  helper.make_node("Add", ["pitch0", "spk0"], ["pitch"])]
        inputs.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
    else:
        nodes.append(helper.make_node("Identity", ["pitch0"], ["pitch"]))
    nodes += [helper.make_node("Mul", ["phase", "pitch"], ["arg"]),
              helper.make_node("Sin", ["arg"], ["wave"]),
              helper.make_node("Reshape", ["wave", "out_shape"], ["output"])]
    graph = helper.make_graph(nodes, "piper-test-voice", inputs,
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "time"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / "test-voice.onnx"
    onnx.save(model, path)
    if write_config:
        speaker_map = {f"speaker{i}": i for i in range(speakers)} if speakers > 1 else {}
        (folder / "test-voice.onnx.json").write_text(json.dumps({
            "audio": {"sample_rate": 16000}, "espeak": {"voice": "en-us"}, "phoneme_type": "espeak",
            "num_symbols": len(SYMBOLS), "num_speakers": speakers, "speaker_id_map": speaker_map,
            "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
            "phoneme_id_map": {s: [i] for i, s in enumerate(SYMBOLS)},
        }, ensure_ascii=False), encoding="utf-8")
    return path


def test_piper_voice_runs_with_piper_inputs(tmp_path: Path):
    tts = open_tts(config(tts_backend="piper", tts_model=str(build_piper_voice(tmp_path))))
    assert tts.name == "piper:test-voice" and tts.sample_rate == 16000
    text = "Hello there, how are you?"
    phonemes = tts.phonemes(text)
    ipa = "".join(phonemes)
    assert "," in ipa and ipa.endswith("?")  # clause punctuation put back after espeak-ng's IPA
    assert "ˈ" in ipa and "h" in ipa  # stress marks and sounds from espeak-ng
    ids = tts.phoneme_ids(phonemes)
    assert ids[:2] == [1, 0] and ids[-1] == 2  # BOS PAD ... EOS
    assert all(ids[i] == 0 for i in range(3, len(ids) - 1, 2))  # a pad after every phoneme
    samples = tts.synthesize(text)
    assert samples.dtype == np.float32 and len(samples) == len(ids) * HOP
    assert 0.9 < np.max(np.abs(samples)) <= 0.95 + 1e-6  # peak-normalised like piper
    assert not np.allclose(samples[:HOP * 4], tts.synthesize("Something else entirely.")[:HOP * 4])


def test_piper_rate_sets_the_length_scale(tmp_path: Path):
    model = build_piper_voice(tmp_path)
    text = "Twice as fast."
    normal = PiperTTS(model).synthesize(text)
    fast = PiperTTS(model, rate=2.0).synthesize(text)
    assert len(fast) == len(normal) // 2


def test_piper_speakers(tmp_path: Path):
    model = build_piper_voice(tmp_path, speakers=3)
    first = PiperTTS(model, speaker="speaker0").synthesize("Hello.")
    third = PiperTTS(model, speaker="speaker2").synthesize("Hello.")
    assert np.allclose(first, PiperTTS(model).synthesize("Hello."))  # the default is the first speaker
    assert not np.allclose(first, third)
    assert np.allclose(third, PiperTTS(model, speaker="2").synthesize("Hello."))
    with pytest.raises(EdgeAIError, match=r"no speaker 'nobody'.*speaker0"):
        PiperTTS(model, speaker="nobody")


def test_piper_text_phonemes(tmp_path: Path):
    model = build_piper_voice(tmp_path)
    config_path = model.with_name(model.name + ".json")
    data = json.loads(config_path.read_text(encoding="utf-8"))
    data["phoneme_type"] = "text"
    config_path.write_text(json.dumps(data), encoding="utf-8")
    tts = PiperTTS(model)
    assert tts.phonemes("abc d.") == list("abc d.")
    assert len(tts.synthesize("abc d.")) == (2 + 2 * 6 + 1) * HOP  # BOS PAD, 6 x (symbol PAD), EOS


def test_piper_missing_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(EdgeAIError, match=r"needs a voice file.*voice.tts_model"):
        open_tts(config(tts_backend="piper"))
    with pytest.raises(NotFoundError, match=r"does not exist"):
        open_tts(config(tts_backend="piper", tts_model=str(tmp_path / "nope.onnx")))
    model = build_piper_voice(tmp_path, write_config=False)
    with pytest.raises(EdgeAIError, match=r"no config test-voice.onnx.json beside it"):
        PiperTTS(model)


def test_piper_bad_config_and_bad_model_are_clear_errors(tmp_path: Path):
    model = build_piper_voice(tmp_path)
    config_path = model.with_name(model.name + ".json")
    config_path.write_text("{not json", encoding="utf-8")
    with pytest.raises(EdgeAIError, match=r"is not a piper voice config"):
        PiperTTS(model)
    config_path.write_text(json.dumps({"audio": {"sample_rate": 22050}}), encoding="utf-8")
    with pytest.raises(EdgeAIError, match=r"is not a piper voice config.*KeyError"):
        PiperTTS(model)
    other = tmp_path / "other"
    other.mkdir()
    wrong = build_piper_voice(other, input_names=("tokens", "token_lengths", "params"))
    with pytest.raises(EdgeAIError, match=r"is not a piper voice: its inputs are params, token_lengths, tokens"):
        PiperTTS(wrong)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    junk = garbage / "junk.onnx"
    junk.write_bytes(os.urandom(256))
    (garbage / "junk.onnx.json").write_text((tmp_path / "other" / "test-voice.onnx.json").read_text(encoding="utf-8"),
                                            encoding="utf-8")
    with pytest.raises(EdgeAIError, match=r"is not a usable ONNX model"):
        PiperTTS(junk)


def test_multi_speaker_voice_without_sid_input_is_refused(tmp_path: Path):
    model = build_piper_voice(tmp_path)
    config_path = model.with_name(model.name + ".json")
    data = json.loads(config_path.read_text(encoding="utf-8"))
    data["num_speakers"] = 4
    config_path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(EdgeAIError, match=r"not a piper voice.*takes input, input_lengths, scales, sid"):
        PiperTTS(model)


def test_piper_clause_marks_when_espeak_splits_otherwise(tmp_path: Path):
    tts = PiperTTS(build_piper_voice(tmp_path))
    ipa = "".join(tts.phonemes("Dr. Smith is here"))  # espeak-ng ends a clause at "Dr.": marks cannot be matched
    assert not ipa.endswith(".") and "smˈɪθ" in unicodedata.normalize("NFC", ipa)
    assert "".join(tts.phonemes("Dr. Smith is here!")).endswith("!")

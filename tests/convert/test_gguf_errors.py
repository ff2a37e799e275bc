"""Bad input: one-line EdgeAIError naming the file or tensor, and nothing left in the output folder."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from convert.gguf import SUPPORTED_ARCHITECTURES, convert_checkpoint
from edge_ai import fileio
from edge_ai.errors import EdgeAIError


def _fails(src: Path, out_dir: Path, pattern: str, **kwargs) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    with pytest.raises(EdgeAIError, match=pattern) as info:
        convert_checkpoint(src, out_dir / "model.gguf", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert list(out_dir.iterdir()) == [], "a failed conversion left files behind"
    return message


def _shard_with(src: Path, name: str) -> Path:
    index = json.loads((src / "model.safetensors.index.json").read_text())
    return src / index["weight_map"][name]


def _rewrite_shard(shard: Path, edit) -> None:
    tensors = load_file(shard)
    edit(tensors)
    save_file(tensors, shard, metadata={"format": "pt"})


def test_missing_folder_and_config(tmp_path: Path) -> None:
    _fails(tmp_path / "nope", tmp_path / "out", r"nope is not a folder")
    (tmp_path / "empty").mkdir()
    _fails(tmp_path / "empty", tmp_path / "out", r"no config\.json in .*empty")


def test_config_not_json(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    (src / "config.json").write_text("{ not json")
    _fails(src, tmp_path / "out", r"config\.json is not valid JSON")


def test_unknown_architecture_lists_supported(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    config = json.loads((src / "config.json").read_text())
    config.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (src / "config.json").write_text(json.dumps(config))
    message = _fails(src, tmp_path / "out", r"unsupported architecture GPT2LMHeadModel")
    for name in SUPPORTED_ARCHITECTURES:
        assert name in message


def test_unknown_architecture_is_named_before_its_weights_are_read(tmp_path: Path) -> None:
    """A BERT folder (integer position_ids among its weights, which no supported model has) is an
    unsupported architecture, not a complaint about one of its tensors."""
    import numpy as np

    src = tmp_path / "bert"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    save_file({"embeddings.position_ids": np.arange(8, dtype=np.int64)[None]}, src / "model.safetensors")
    _fails(src, tmp_path / "out", r"unsupported architecture BertModel \(model_type 'bert'\); supported: ")


def test_model_type_is_the_fallback(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["Qwen2ForSomethingNew"]
    (src / "config.json").write_text(json.dumps(config))
    report = convert_checkpoint(src, tmp_path / "m.gguf", outtype="f32")
    assert report.architecture == "qwen2" and report.hf_architecture == "qwen2"


def test_mismatched_shape_names_the_tensor(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    name = "model.layers.1.self_attn.k_proj.weight"

    def shrink(tensors):
        tensors[name] = tensors[name][:16].copy()
    _rewrite_shard(_shard_with(src, name), shrink)
    _fails(src, tmp_path / "out", rf"tensor {name} in model-\d+-of-\d+\.safetensors has shape \[16, 64\] "
                                  r"but config\.json implies \[32, 64\]")


def test_config_disagreeing_with_weights(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    config = json.loads((src / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (src / "config.json").write_text(json.dumps(config))
    _fails(src, tmp_path / "out", r"belongs to block 1 but config\.json num_hidden_layers is 1")


def test_missing_tensor_names_it(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    name = "model.layers.1.mlp.down_proj.weight"
    _rewrite_shard(_shard_with(src, name), lambda t: t.pop(name))
    index = json.loads((src / "model.safetensors.index.json").read_text())
    # still listed in the index: the shard is incomplete
    _fails(src, tmp_path / "out", rf"tensor {name} listed in the shard index is not in model-")
    del index["weight_map"][name]
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    _fails(src, tmp_path / "out", rf"no tensor {name} \(GGUF blk\.1\.ffn_down\.weight\)")


def test_index_naming_an_absent_shard(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    shard = _shard_with(src, "model.norm.weight")
    shard.unlink()
    _fails(src, tmp_path / "out", rf"names shard {shard.name}, which is not in")


def test_truncated_shard(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    shard = _shard_with(src, "model.embed_tokens.weight")
    shard.write_bytes(shard.read_bytes()[:-100])
    _fails(src, tmp_path / "out", rf"{shard.name} is not a valid safetensors file")


def test_no_weights(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    for f in src.glob("model*"):
        f.unlink()
    _fails(src, tmp_path / "out", r"no weights in")


def test_unreadable_tokenizers(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy("qwen2")
    (src / "tokenizer.json").write_text('{"model": ')
    _fails(src, tmp_path / "out1", r"tokenizer\.json is not valid JSON")
    (src / "tokenizer.json").unlink()
    _fails(src, tmp_path / "out2", r"no tokenizer in .*tokenizer\.json or tokenizer\.model")

    spm = checkpoint_copy("mistral")
    (spm / "tokenizer.model").write_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")
    _fails(spm, tmp_path / "out3", r"tokenizer\.model is not a valid SentencePiece model")


def test_unknown_pre_tokenizer_is_refused(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy("qwen2")
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\s+|."
    (src / "tokenizer.json").write_text(json.dumps(tok))
    _fails(src, tmp_path / "out", r"unknown BPE pre-tokenizer in .*tokenizer\.json")


def test_tokenizer_larger_than_embedding(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy("qwen2")
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["added_tokens"].append({"id": 5000, "content": "<|extra|>", "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False, "special": True})
    (src / "tokenizer.json").write_text(json.dumps(tok))
    _fails(src, tmp_path / "out", r"tokenizer\.json has token id 5000 but the model's embedding has only")


def test_bad_outtype(checkpoint_copy, tmp_path: Path) -> None:
    _fails(checkpoint_copy(), tmp_path / "out", r"unknown outtype 'q4_k'", outtype="q4_k")


def test_unwritable_output_locations(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(EdgeAIError, match=r"cannot write to .*a-file.*choose a writable location"):
        convert_checkpoint(src, blocker / "model.gguf")
    with pytest.raises(EdgeAIError, match=r"cannot write to /proc/edge-ai-test"):
        convert_checkpoint(src, Path("/proc/edge-ai-test/model.gguf"))


def test_full_disk_is_caught_up_front(checkpoint_copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = checkpoint_copy()

    class Usage:
        free = 1000
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: Usage())  # a full disk, which this machine lacks
    _fails(src, tmp_path / "out", r"needs about .* MiB but .*out has only 0 MiB free")


def test_disk_full_mid_write_leaves_nothing(checkpoint_copy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = checkpoint_copy()
    original = gguf.GGUFWriter.write_tensor_data
    calls = []

    def failing(self, tensor, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, tensor, *args, **kwargs)
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", failing)
    _fails(src, tmp_path / "out", r"cannot write .*model\.gguf: No space left on device")


def test_existing_output_is_replaced_only_on_success(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    out = tmp_path / "model.gguf"
    out.write_bytes(b"old")
    (src / "config.json").write_text("[]")
    with pytest.raises(EdgeAIError, match="not a JSON object"):
        convert_checkpoint(src, out)
    assert out.read_bytes() == b"old"


def test_duplicate_tensor_across_shards(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    index_path = src / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    _rewrite_shard(src / shards[-1], lambda t: t.update({"model.norm.weight": np.ones(64, np.float32)})
                   if "model.norm.weight" not in t else None)
    _rewrite_shard(src / shards[0], lambda t: t.update({"model.norm.weight": np.ones(64, np.float32)})
                   if "model.norm.weight" not in t else None)
    _fails(src, tmp_path / "out", r"tensor model\.norm\.weight appears in both")


def test_values_beyond_f16_are_refused_for_f16_but_fine_in_bf16(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    name = "model.layers.0.mlp.down_proj.weight"

    def spike(tensors: dict) -> None:
        weight = tensors[name].copy()
        weight[0, 0] = 1e5  # fits bf16 and f32, overflows f16 (max 65504) to inf
        tensors[name] = weight
    _rewrite_shard(_shard_with(src, name), spike)
    _fails(src, tmp_path / "f16", r"tensor blk\.0\.ffn_down\.weight has values up to 1e\+05, beyond float16")
    report = convert_checkpoint(src, tmp_path / "ok" / "model.gguf", outtype="bf16")
    assert report.output.exists()


def _rope_theta(path: Path, arch: str) -> float:
    return float(gguf.GGUFReader(path).get_field(f"{arch}.rope.freq_base").contents())


def test_value_omitted_without_transformers_defaults_is_refused(checkpoint_copy, tmp_path: Path) -> None:
    """A model_type this transformers does not know: its class defaults cannot be read, so a value the
    conversion needs and config.json omits (rope_theta) is refused instead of guessed (as 10000)."""
    src = checkpoint_copy()
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "qwen2_from_the_future"  # "architectures" still selects qwen2
    (src / "config.json").write_text(json.dumps(config))
    complete = convert_checkpoint(src, tmp_path / "complete.gguf", outtype="f32")  # nothing needed is omitted
    assert _rope_theta(complete.output, "qwen2") == 1e6

    config.pop("rope_theta", None)
    config.pop("rope_parameters", None)
    config.pop("rope_scaling", None)
    (src / "config.json").write_text(json.dumps(config))
    message = _fails(src, tmp_path / "out", r"config\.json omits rope_theta, and the model's defaults cannot be "
                                            r"read \(transformers \S+ does not know model_type 'qwen2_from_the_future'\)")
    assert message.endswith("install a transformers version that knows 'qwen2_from_the_future', "
                            "or add it to config.json")

    config["model_type"] = "qwen2"  # a known model_type: transformers supplies Qwen2's default
    (src / "config.json").write_text(json.dumps(config))
    report = convert_checkpoint(src, tmp_path / "known.gguf", outtype="f32")
    from transformers import Qwen2Config
    assert _rope_theta(report.output, "qwen2") == Qwen2Config().rope_theta


def test_required_value_omitted_without_transformers_defaults_names_every_key(checkpoint_copy,
                                                                              tmp_path: Path) -> None:
    src = checkpoint_copy()
    config = json.loads((src / "config.json").read_text())
    for key in ("rope_theta", "rope_parameters", "rope_scaling", "rms_norm_eps"):
        config.pop(key, None)
    del config["model_type"]
    (src / "config.json").write_text(json.dumps(config))
    _fails(src, tmp_path / "out", r"config\.json omits rope_theta, rms_norm_eps / layer_norm_epsilon, and the model's "
                                  r"defaults cannot be read \(config\.json names no model_type\); add model_type to "
                                  r"config\.json, or add them to config\.json$")


def test_index_disagreeing_with_the_shards_names_both_files(checkpoint_copy, tmp_path: Path) -> None:
    src = checkpoint_copy()
    index_path = src / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    a, b = "model.norm.weight", "model.embed_tokens.weight"
    assert index["weight_map"][a] != index["weight_map"][b]
    index["weight_map"][a], index["weight_map"][b] = index["weight_map"][b], index["weight_map"][a]
    index_path.write_text(json.dumps(index))
    _fails(src, tmp_path / "out", rf"tensor {b} is in {index['weight_map'][a]} but the shard index says "
                                  rf"{index['weight_map'][b]}; the index and the shards are from different downloads")


def test_write_errors_name_the_output_and_other_errors_keep_their_own(tmp_path: Path) -> None:
    """atomic_path turns only write-side failures into "cannot write <output>"; a failure to read an
    input inside the block is that error, not advice to free disk space."""
    target = tmp_path / "out.bin"
    missing = tmp_path / "missing-input"
    with pytest.raises(FileNotFoundError) as info:
        with fileio.atomic_path(target) as tmp:
            tmp.write_bytes(missing.read_bytes())
    assert info.value.filename == str(missing)
    unreadable = tmp_path / "input"
    with pytest.raises(PermissionError):  # EACCES on an input (root ignores file modes, so raised as read() would)
        with fileio.atomic_path(target):
            raise PermissionError(errno.EACCES, "Permission denied", str(unreadable))
    with pytest.raises(EdgeAIError, match=r"^cannot write .*out\.bin: No space left on device; free some space "
                                          r"or choose another location$"):
        with fileio.atomic_path(target) as tmp:
            with open(tmp, "wb") as f, open("/dev/full", "wb") as full:
                f.write(b"x")
                full.write(b"x" * 1024)
                full.flush()
    with pytest.raises(EdgeAIError, match=r"^cannot write .*out\.bin: Read-only file system; choose a writable location$"):
        with fileio.atomic_path(target) as tmp:
            raise OSError(errno.EROFS, "Read-only file system", str(tmp))
    with pytest.raises(EdgeAIError, match=r"^cannot write .*out\.bin: Input/output error; check the disk"):
        with fileio.atomic_path(target):
            raise OSError(errno.EIO, "Input/output error")  # a failing disk under write(): still one line
    assert list(tmp_path.iterdir()) == []

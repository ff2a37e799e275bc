"""The int8 scheme on a small hand-built graph (Conv -> MatMul, and a table lookup): which nodes become
integer ops, which stay fp32, and the options the benchmark compares."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convert.onnx.quantize import Int8Options, quantize_folder


def _graph(path: Path, seed: int) -> None:
    """x [1, 8, 16] -> Conv (8 -> 16 channels, k 3) -> [1, 16, 14] -> MatMul [14, 32] -> y; ids -> Gather(table) -> e."""
    rng = np.random.default_rng(seed)
    weights = {"conv.weight": rng.standard_normal((16, 8, 3)), "proj.weight": rng.standard_normal((14, 32)),
               "table": rng.standard_normal((50, 32))}
    nodes = [helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="/conv1/Conv"),
             helper.make_node("MatMul", ["c", "proj.weight"], ["y"], name="/proj/MatMul"),
             helper.make_node("Gather", ["table", "ids"], ["e"], name="/embed/Gather")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16]),
                        helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32]),
         helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4, 32])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture
def fp32(tmp_path: Path) -> Path:
    folder = tmp_path / "fp32"
    folder.mkdir()
    _graph(folder / "encoder_model.onnx", 0)
    _graph(folder / "decoder_model.onnx", 1)
    (folder / "config.json").write_text("{}")
    return folder


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _run(path: Path) -> list[np.ndarray]:
    import onnxruntime as ort

    feeds = {"x": np.linspace(-1, 1, 128, dtype=np.float32).reshape(1, 8, 16), "ids": np.array([[0, 3, 7, 49]])}
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_int8_quantizes_matmuls_and_lookups_but_keeps_convolutions_fp32(fp32: Path, tmp_path: Path) -> None:
    """ConvInteger was slower than fp32 Conv and cost Whisper's encoder words (quantize.py's docstring)."""
    quantize_folder(fp32, tmp_path / "int8", "int8")
    ops = _ops(tmp_path / "int8" / "encoder_model.onnx")
    assert ops["Conv"] == 1 and ops["ConvInteger"] == 0
    assert ops["MatMulInteger"] == 1 and ops["MatMul"] == 0
    assert ops["DequantizeLinear"] == 1  # the table is stored int8
    assert (tmp_path / "int8" / "config.json").is_file()
    for got, want in zip(_run(tmp_path / "int8" / "encoder_model.onnx"), _run(fp32 / "encoder_model.onnx")):
        assert np.abs(got - want).max() < 0.05 * np.abs(want).max()

    quantize_folder(fp32, tmp_path / "all", "int8", int8=Int8Options(op_types=()))  # every op onnxruntime can
    assert _ops(tmp_path / "all" / "encoder_model.onnx")["ConvInteger"] == 1


def test_int8_options_pick_graphs_nodes_and_weight_range(fp32: Path, tmp_path: Path) -> None:
    quantize_folder(fp32, tmp_path / "enc", "int8", int8=Int8Options(graphs=("encoder_model",)))
    assert (tmp_path / "enc" / "decoder_model.onnx").read_bytes() == (fp32 / "decoder_model.onnx").read_bytes()
    assert _ops(tmp_path / "enc" / "encoder_model.onnx")["MatMulInteger"] == 1

    quantize_folder(fp32, tmp_path / "kept", "int8", int8=Int8Options(keep_fp32=("/proj/",), op_types=("MatMul",)))
    ops = _ops(tmp_path / "kept" / "encoder_model.onnx")
    assert ops["MatMul"] == 1 and ops["MatMulInteger"] == 0 and ops["DequantizeLinear"] == 0

    for reduce_range, top in ((True, 63), (False, 127)):
        out = tmp_path / f"range-{reduce_range}"
        quantize_folder(fp32, out, "int8", int8=Int8Options(reduce_range=reduce_range, op_types=("MatMul",)))
        model = onnx.load(str(out / "encoder_model.onnx"))
        (weight,) = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "proj.weight_quantized"]
        assert weight.dtype == np.int8
        assert np.abs(weight.astype(int)).max() in (top, top + 1)  # 7 bits on CPUs without VNNI

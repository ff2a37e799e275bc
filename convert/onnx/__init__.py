"""Hugging Face -> ONNX: optimum-onnx export, onnxruntime int8 / int4 quantization, parity vs PyTorch.

`convert_onnx` (convert.py) is the whole `edge-ai convert onnx` command; export.py checks the
source and calls optimum, quantize.py wraps onnxruntime's quantizers, probes.py measures each
variant against the PyTorch model.
"""

from convert.onnx.convert import OnnxReport, Variant, convert_onnx, format_table

__all__ = ["OnnxReport", "Variant", "convert_onnx", "format_table"]

"""Model toolchain: Hugging Face checkpoints to GGUF / ONNX, quantization, evaluation, distillation."""

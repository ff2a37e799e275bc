"""A tiny random Gemma 3 vision projector (mmproj GGUF) for the default Gemma 3 270M text model.

llama.cpp's multimodal library (mtmd) loads it like a real one: a one-layer SigLIP tower on 56 px
images (4x4 patches of 14 px), pooled 2x2 into 4 image tokens and projected to the text model's
640-dimensional embeddings. Its weights are random, so what the model says about an image means
nothing; what it proves is the path: the image is encoded and its tokens reach the model.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

TEXT_EMBD = 640  # Gemma 3 270M's embedding width: the projection's output
EMBD, FFN, HEADS, PATCH, IMAGE, POOL = 64, 128, 2, 14, 56, 2


def _name(tensor: gguf.MODEL_TENSOR, suffix: str, block: int | None = None) -> str:
    base = gguf.TENSOR_NAMES[tensor]
    return (base.format(bid=block) if block is not None else base) + f".{suffix}"


def write_tiny_mmproj(path: Path, seed: int = 0, text_embd: int = TEXT_EMBD) -> Path:
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type("gemma3")
    writer.add_vision_image_size(IMAGE)
    writer.add_vision_patch_size(PATCH)
    writer.add_vision_embedding_length(EMBD)
    writer.add_vision_feed_forward_length(FFN)
    writer.add_vision_block_count(1)
    writer.add_vision_head_count(HEADS)
    writer.add_vision_attention_layernorm_eps(1e-6)
    writer.add_vision_projection_dim(text_embd)
    writer.add_vision_projector_scale_factor(POOL)
    writer.add_vision_image_mean([0.5, 0.5, 0.5])
    writer.add_vision_image_std([0.5, 0.5, 0.5])
    writer.add_vision_use_gelu(True)
    patches = (IMAGE // PATCH) ** 2
    tensors = {
        _name(gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH, "weight"): weight(EMBD, 3, PATCH, PATCH),
        _name(gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH, "bias"): weight(EMBD),
        _name(gguf.MODEL_TENSOR.V_ENC_EMBD_POS, "weight"): weight(patches, EMBD),
        _name(gguf.MODEL_TENSOR.V_POST_NORM, "weight"): np.ones(EMBD, np.float32),
        _name(gguf.MODEL_TENSOR.V_POST_NORM, "bias"): np.zeros(EMBD, np.float32),
        _name(gguf.MODEL_TENSOR.V_MM_SOFT_EMB_NORM, "weight"): np.ones(EMBD, np.float32),
        _name(gguf.MODEL_TENSOR.V_MM_INP_PROJ, "weight"): weight(EMBD, text_embd),
    }
    for tensor in (gguf.MODEL_TENSOR.V_ENC_ATTN_Q, gguf.MODEL_TENSOR.V_ENC_ATTN_K, gguf.MODEL_TENSOR.V_ENC_ATTN_V,
                   gguf.MODEL_TENSOR.V_ENC_ATTN_O):
        tensors[_name(tensor, "weight", 0)] = weight(EMBD, EMBD)
        tensors[_name(tensor, "bias", 0)] = weight(EMBD)
    for tensor in (gguf.MODEL_TENSOR.V_ENC_INPUT_NORM, gguf.MODEL_TENSOR.V_ENC_POST_ATTN_NORM):
        tensors[_name(tensor, "weight", 0)] = np.ones(EMBD, np.float32)
        tensors[_name(tensor, "bias", 0)] = np.zeros(EMBD, np.float32)
    tensors[_name(gguf.MODEL_TENSOR.V_ENC_FFN_UP, "weight", 0)] = weight(FFN, EMBD)
    tensors[_name(gguf.MODEL_TENSOR.V_ENC_FFN_UP, "bias", 0)] = weight(FFN)
    tensors[_name(gguf.MODEL_TENSOR.V_ENC_FFN_DOWN, "weight", 0)] = weight(EMBD, FFN)
    tensors[_name(gguf.MODEL_TENSOR.V_ENC_FFN_DOWN, "bias", 0)] = weight(EMBD)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

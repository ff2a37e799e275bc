"""Tiny random Gemma 2/3 and mixture-of-experts checkpoints for converter tests (see tiny_hf.py).

    ckpt = build_more("gemma3", tmp_path / "gemma3")    # config + shards + tokenizer files
    ckpt.model(ids) / ckpt.encode(text)                  # the transformers / tokenizer reference

Same recipe as tiny_hf.build_checkpoint (width 64, 4 query / 2 KV heads, every parameter
re-randomised, float32 shards), with what these families need to be really exercised:
- Gemma: a Gemma-style SentencePiece tokenizer (<pad>/<eos>/<bos>/<unk> = 0/1/2/3, no dummy
  prefix, byte fallback, <start_of_turn>/<end_of_turn>), a sliding window of 8 tokens (prompts
  are longer), strong soft-capping (Gemma 2), a query_pre_attn_scalar that is not head_dim
  (so the folded query scale is tested), Gemma 3 with head_dim 32 != hidden/heads, 3 layers
  sliding/full/sliding (not llama.cpp's built-in every-6th layout, so the written per-layer pattern
  is what makes it right), linear RoPE scaling on the full layer and a sliding RoPE base, and
  `gemma3_mm`: a Gemma3ForConditionalGeneration with a 1-layer SigLIP tower.
- MoE: 4 experts, 2 used, routers scaled up so that no top-2 choice is a near tie.
- OLMoE: as many K heads as Q heads (llama.cpp's olmoe needs it), whole-width q/k norms.
- Granite-MoE: fused `input_linear` experts, every multiplier away from 1 (embedding, attention,
  residual, logits) and tied embeddings, as the released 1B/3B models.
- SmolLM3: 4 layers, so the last one runs without RoPE (NoPE), tied embeddings as the 3B.
- DeepSeek: MLA with kv_lora_rank 32, nope/rope/v head dims 16/8/16, one leading dense layer then
  MoE with a shared expert; V2 as V2-Lite (plain q_proj, softmax routing) with a routed scale, V3
  with q LoRA, sigmoid routing, a random expert-score correction bias and 2 groups of which 1 is used.
- GLM-4.5 MoE: the same MoE (V3 routing) with Q/K/V biases, RoPE on half of each head, q/k norms,
  and a tokenizer with GLM's special tokens ([gMASK], <|user|>, <|observation|>, <|endoftext|>).
- LFM2: 4 layers conv/attention/conv/attention, a 3-tap convolution, an auto-adjusted MLP width
  (2/3 of intermediate_size rounded up to 32: 96).
- gpt-oss: sliding/full layers with an 8-token window, sinks, biases everywhere; saved as the released
  checkpoints are, experts in MXFP4 (quantized here; the reference model runs the dequantized
  values), and `save_dequantized` writes the float layout transformers saves.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from tiny_hf import (
    BASE,
    CORPUS,
    TinyCheckpoint,
    hf_spm_tokenizer,
    randomize_,
    train_bpe_tokenizer,
    train_spm_tokenizer,
    transformers4_rope,
)

MORE_ARCHS = ("gemma2", "gemma3", "gemma3_mm", "qwen2moe", "qwen3moe", "mixtral", "olmoe", "granitemoe", "smollm3",
              "deepseek_v2", "deepseek_v3", "glm4moe", "lfm2", "gpt_oss")
TOKENIZER_OF = {"gemma2": "gemma", "gemma3": "gemma", "gemma3_mm": "gemma", "qwen2moe": "qwen2",
                "qwen3moe": "qwen2", "mixtral": "spm", "olmoe": "gpt2", "granitemoe": "gpt2",
                "smollm3": "llama3", "deepseek_v2": "llama3", "deepseek_v3": "llama3",
                "glm4moe": "glm", "lfm2": "llama3", "gpt_oss": "llama3"}
# Router weights scaled up (well-separated top-k choices, no near ties between implementations).
ROUTERS = ("mlp.gate.weight", "block_sparse_moe.gate.weight", "block_sparse_moe.router.layer.weight",
           "mlp.router.weight")
SLIDING_WINDOW = 8

GEMMA_CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
                       "else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}")

_GEMMA3_TEXT: dict[str, Any] = {
    "head_dim": 32, "num_hidden_layers": 3, "sliding_window": SLIDING_WINDOW, "query_pre_attn_scalar": 24,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"], "rms_norm_eps": 1e-6,
    "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0}},
}

_MLA: dict[str, Any] = {
    "num_key_value_heads": 4, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
    "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
    "first_k_dense_replace": 1, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
}

MORE_CONFIG: dict[str, dict[str, Any]] = {
    "gemma2": {"head_dim": 16, "sliding_window": SLIDING_WINDOW, "query_pre_attn_scalar": 32,
               "attn_logit_softcapping": 5.0, "final_logit_softcapping": 30.0, "rms_norm_eps": 1e-6,
               "rope_theta": 10000.0},
    "gemma3": _GEMMA3_TEXT,
    "gemma3_mm": _GEMMA3_TEXT,
    "qwen2moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                 "shared_expert_intermediate_size": 48, "norm_topk_prob": False, "rms_norm_eps": 1e-6,
                 "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}},
    "qwen3moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "head_dim": 32,
                 "norm_topk_prob": True, "rms_norm_eps": 1e-6,
                 "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": None, "rms_norm_eps": 1e-5,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}},
    # transformers 4.57 configs: rope_theta / rope_scaling (transformers 5 reads them too)
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 32, "num_key_value_heads": 4,
              "norm_topk_prob": False, "rms_norm_eps": 1e-5, "rope_theta": 50000.0},
    "granitemoe": {"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 32,
                   "embedding_multiplier": 12.0, "attention_multiplier": 0.1, "residual_multiplier": 0.22,
                   "logits_scaling": 4.0, "tie_word_embeddings": True, "rms_norm_eps": 1e-6,
                   "rope_theta": 10000.0},
    "smollm3": {"num_hidden_layers": 4, "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 200000.0},
    "deepseek_v2": {**_MLA, "q_lora_rank": None, "topk_method": "greedy", "norm_topk_prob": False,
                    "routed_scaling_factor": 1.5},
    "deepseek_v3": {**_MLA, "q_lora_rank": 24, "n_group": 2, "topk_group": 1, "norm_topk_prob": True,
                    "routed_scaling_factor": 2.5},
    "glm4moe": {"head_dim": 32, "partial_rotary_factor": 0.5, "attention_bias": True, "use_qk_norm": True,
                "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                "first_k_dense_replace": 1, "n_group": 2, "topk_group": 1, "norm_topk_prob": True,
                "routed_scaling_factor": 1.5, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0},
    "lfm2": {"num_hidden_layers": 4, "layer_types": ["conv", "full_attention", "conv", "full_attention"],
             "conv_L_cache": 3, "block_multiple_of": 32, "norm_eps": 1e-5, "rope_theta": 1000000.0,
             "tie_word_embeddings": True},
    "gpt_oss": {"head_dim": 16, "num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 96,
                "sliding_window": SLIDING_WINDOW, "rope_scaling": None, "rope_theta": 150000.0, "rms_norm_eps": 1e-5},
}


def train_gemma_tokenizer(out: Path, *, vocab_size: int = 600) -> Any:
    """A Gemma-style SentencePiece BPE model in out/tokenizer.model (+ tokenizer_config.json)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, split_digits=True, allow_whitespace_only_pieces=True, character_coverage=1.0,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"],
        hard_vocab_limit=False, minloglevel=2, num_threads=1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    specials = {str(sp.piece_to_id(t)): {"content": t, "special": True, "normalized": False, "lstrip": False,
                                         "rstrip": False, "single_word": False}
                for t in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": specials,
        "chat_template": GEMMA_CHAT_TEMPLATE}))
    return sp


def _config(arch: str, settings: dict[str, Any]) -> Any:
    import transformers

    if arch == "gemma3_mm":
        text = transformers.Gemma3TextConfig(**settings)
        vision = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, image_size=28, patch_size=14)
        return transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                         boi_token_index=settings["vocab_size"] - 3,
                                         eoi_token_index=settings["vocab_size"] - 2,
                                         image_token_index=settings["vocab_size"] - 1)
    cls = {"gemma2": transformers.Gemma2Config, "gemma3": transformers.Gemma3TextConfig,
           "qwen2moe": transformers.Qwen2MoeConfig, "qwen3moe": transformers.Qwen3MoeConfig,
           "mixtral": transformers.MixtralConfig, "olmoe": transformers.OlmoeConfig,
           "granitemoe": transformers.GraniteMoeConfig, "smollm3": transformers.SmolLM3Config,
           "deepseek_v2": transformers.DeepseekV2Config, "deepseek_v3": transformers.DeepseekV3Config,
           "glm4moe": transformers.Glm4MoeConfig, "lfm2": transformers.Lfm2Config,
           "gpt_oss": transformers.GptOssConfig}[arch]
    return cls(**settings)


def build_more(arch: str, out: Path, *, seed: int = 0, shard_size: str = "150KB",
               **config_overrides: Any) -> TinyCheckpoint:
    """Write a tiny random `arch` (one of MORE_ARCHS) checkpoint + tokenizer into `out`."""
    import torch
    import transformers

    kind = TOKENIZER_OF[arch]
    out.mkdir(parents=True, exist_ok=True)
    if kind in ("gemma", "spm"):
        sp = train_gemma_tokenizer(out) if kind == "gemma" else train_spm_tokenizer(out)
        hf_tok = hf_spm_tokenizer(out)
        n_tokens, bos, eos, pad = sp.vocab_size(), sp.bos_id(), sp.eos_id(), sp.pad_id()
        pad = pad if pad >= 0 else None

        def encode(text: str) -> list[int]:
            return [bos, *sp.encode(text)]
    else:
        hf_tok = train_bpe_tokenizer(kind, out)
        n_tokens = len(hf_tok)
        bos, eos, pad = hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id

        def encode(text: str) -> list[int]:
            return list(hf_tok(text)["input_ids"])

    vocab_size = -(-(n_tokens + 5) // 64) * 64  # padded beyond the tokenizer, as Gemma 3's 262208 rows
    settings = {**BASE, **MORE_CONFIG[arch], **config_overrides, "vocab_size": vocab_size,
                "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}
    config = _config(arch, transformers4_rope(settings))
    torch.manual_seed(seed)
    if arch == "gemma3_mm":
        model = transformers.Gemma3ForConditionalGeneration._from_config(config, attn_implementation="eager",
                                                                         dtype=torch.float32)
    else:
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                                              dtype=torch.float32)
    randomize_(model, seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(ROUTERS):
                p.mul_(4.0)
        gen = torch.Generator().manual_seed(seed + 1)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3: a zero buffer at init
                b.copy_(0.3 * torch.randn(b.shape, generator=gen))
    model.eval()
    model.save_pretrained(out, max_shard_size=shard_size)
    if arch == "gpt_oss":
        save_mxfp4_experts(model, out)

    def logits(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()

    ckpt = TinyCheckpoint(path=out, arch=arch, tokenizer_kind=kind, model=logits, encode=encode,
                          hf_tokenizer=hf_tok, config=config)
    ckpt.torch_model = model  # type: ignore[attr-defined]  # for tests that re-save it in another layout
    return ckpt


def save_fused_experts(ckpt: TinyCheckpoint, out: Path) -> Path:
    """Copy `ckpt` into `out` with the experts as transformers 5 holds them in memory
    (`mlp.experts.gate_up_proj` [E, 2F, D] and `mlp.experts.down_proj` [E, D, F], no `.weight`)."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(ckpt.path, out, ignore=shutil.ignore_patterns("model*.safetensors*"))
    state = {k: v.detach().contiguous() for k, v in ckpt.torch_model.state_dict().items()}  # type: ignore[attr-defined]
    if getattr(ckpt.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    if not any(k.endswith("mlp.experts.gate_up_proj") for k in state):
        state = _fuse_experts(state)  # transformers 4 holds them per expert
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out


_EXPERT = re.compile(r"^(?P<layer>.+)\.(mlp|block_sparse_moe)\.experts\.(?P<e>\d+)\.(?P<proj>\w+)\.weight$")
_PROJ = {"gate_proj": "gate", "w1": "gate", "up_proj": "up", "w3": "up", "down_proj": "down", "w2": "down"}


def _fuse_experts(state: dict[str, Any]) -> dict[str, Any]:
    """Per-expert tensors (transformers 4) in transformers 5's fused layout, Mixtral's
    `block_sparse_moe.` renamed `mlp.` as transformers 5 names it."""
    import torch

    parts: dict[str, dict[str, dict[int, Any]]] = {}
    out = {}
    for name, value in state.items():
        m = _EXPERT.match(name)
        if m is None:
            out[name.replace(".block_sparse_moe.", ".mlp.")] = value
            continue
        parts.setdefault(m["layer"], {}).setdefault(_PROJ[m["proj"]], {})[int(m["e"])] = value
    for layer, projs in parts.items():
        n = len(projs["gate"])
        out[f"{layer}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([projs["gate"][e], projs["up"][e]]) for e in range(n)]).contiguous()
        out[f"{layer}.mlp.experts.down_proj"] = torch.stack([projs["down"][e] for e in range(n)]).contiguous()
    return out


FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                      dtype=np.float32)


def quantize_mxfp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """w [..., cols] (cols a multiple of 32) as Hugging Face MXFP4: blocks uint8 [..., cols/32, 16]
    (value 2k in the low nibble of byte k), E8M0 scales uint8 [..., cols/32], and the dequantized values."""
    groups = w.reshape(*w.shape[:-1], w.shape[-1] // 32, 32).astype(np.float32)
    amax = np.abs(groups).max(axis=-1, keepdims=True)
    exponent = np.ceil(np.log2(np.maximum(amax, 1e-30) / 6.0)).clip(-127, 127)
    scaled = groups / np.exp2(exponent)
    codes = np.abs(scaled[..., None] - FP4_VALUES).argmin(axis=-1).astype(np.uint8)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    scales = (exponent[..., 0] + 127).astype(np.uint8)
    return blocks, scales, (FP4_VALUES[codes] * np.exp2(exponent)).reshape(w.shape)


def save_mxfp4_experts(model: Any, out: Path) -> None:
    """Re-save `model` (already saved in `out` by save_pretrained) with its experts in MXFP4 as the
    released gpt-oss checkpoints hold them, and give `model` the dequantized values (the reference)."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for name in [k for k in state if k.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
        weight = state.pop(name)  # [E, in, out] -> MXFP4 over `in`, rows `out`
        blocks, scales, dequantized = quantize_mxfp4(weight.transpose(1, 2).numpy())
        state[name + "_blocks"] = torch.from_numpy(np.ascontiguousarray(blocks))
        state[name + "_scales"] = torch.from_numpy(np.ascontiguousarray(scales))
        with torch.no_grad():
            model.get_parameter(name).copy_(torch.from_numpy(dequantized).transpose(1, 2))
    for f in list(out.glob("model*.safetensors*")):
        f.unlink()
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})


def save_dequantized(ckpt: TinyCheckpoint, out: Path) -> Path:
    """Copy `ckpt` into `out` with the experts as float tensors (the dequantized MXFP4 values)."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(ckpt.path, out, ignore=shutil.ignore_patterns("model*.safetensors*"))
    state = {k: v.detach().contiguous() for k, v in ckpt.torch_model.state_dict().items()}  # type: ignore[attr-defined]
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out

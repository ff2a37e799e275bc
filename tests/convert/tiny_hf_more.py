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
    legacy_rope,
    randomize_,
    train_bpe_tokenizer,
    train_spm_tokenizer,
)

MORE_ARCHS = ("gemma2", "gemma3", "gemma3_mm", "qwen2moe", "qwen3moe", "mixtral")
TOKENIZER_OF = {"gemma2": "gemma", "gemma3": "gemma", "gemma3_mm": "gemma", "qwen2moe": "qwen2",
                "qwen3moe": "qwen2", "mixtral": "spm"}
SLIDING_WINDOW = 8

GEMMA_CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
                       "else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}")

_GEMMA3_TEXT: dict[str, Any] = {
    "head_dim": 32, "num_hidden_layers": 3, "sliding_window": SLIDING_WINDOW, "query_pre_attn_scalar": 24,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"], "rms_norm_eps": 1e-6,
    "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0}},
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
           "mixtral": transformers.MixtralConfig}[arch]
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
    config = _config(arch, legacy_rope(settings))
    torch.manual_seed(seed)
    if arch == "gemma3_mm":
        model = transformers.Gemma3ForConditionalGeneration._from_config(config, attn_implementation="eager",
                                                                         dtype=torch.float32)
    else:
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                                              dtype=torch.float32)
    randomize_(model, seed)
    with torch.no_grad():  # routers: well-separated top-k choices (no near ties between implementations)
        for name, p in model.named_parameters():
            if name.endswith(("mlp.gate.weight", "block_sparse_moe.gate.weight")):
                p.mul_(4.0)
    model.eval()
    model.save_pretrained(out, max_shard_size=shard_size)

    def logits(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()

    ckpt = TinyCheckpoint(path=out, arch=arch, tokenizer_kind=kind, model=logits, encode=encode,
                          hf_tokenizer=hf_tok, config=config)
    ckpt.torch_model = model  # type: ignore[attr-defined]  # for tests that re-save it in another layout
    return ckpt


_EXPERT = re.compile(r"^(.*)\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)\.weight$")
_EXPERT_PART = {"gate_proj": "gate", "w1": "gate", "up_proj": "up", "w3": "up", "down_proj": "down", "w2": "down"}


def save_fused_experts(ckpt: TinyCheckpoint, out: Path) -> Path:
    """Copy `ckpt` into `out` with the experts as transformers 5 saves them (`mlp.experts.gate_up_proj`
    [E, 2F, D] and `mlp.experts.down_proj` [E, D, F], no `.weight`; Mixtral's `block_sparse_moe.` as
    `mlp.`). The toolchain's transformers 4.57 keeps one module per expert: they are stacked here."""
    import shutil

    import torch
    from safetensors.torch import save_file

    shutil.copytree(ckpt.path, out, ignore=shutil.ignore_patterns("model*.safetensors*"))
    state = {k: v.detach().contiguous() for k, v in ckpt.torch_model.state_dict().items()}  # type: ignore[attr-defined]
    if getattr(ckpt.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    fused: dict[str, Any] = {}
    experts: dict[str, dict[tuple[int, str], Any]] = {}
    for name, value in state.items():
        if match := _EXPERT.match(name):
            experts.setdefault(match[1], {})[(int(match[2]), _EXPERT_PART[match[3]])] = value
        else:
            fused[name.replace(".block_sparse_moe.", ".mlp.")] = value
    assert experts, sorted(state)[:20]
    for prefix, parts in experts.items():
        count = 1 + max(e for e, _ in parts)
        fused[f"{prefix}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([parts[(e, "gate")], parts[(e, "up")]]) for e in range(count)]).contiguous()
        fused[f"{prefix}.mlp.experts.down_proj"] = torch.stack([parts[(e, "down")] for e in range(count)]).contiguous()
    save_file(fused, out / "model.safetensors", metadata={"format": "pt"})
    return out

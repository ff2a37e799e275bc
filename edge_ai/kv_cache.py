"""The context memory llama.cpp allocates for a model: its KV cache and its recurrent state, in bytes.

The RAM check, `models info` and `doctor` size a model before llama.cpp loads it, so this restates
how llama-cpp-python 0.3.36's llama.cpp sizes that memory (llama-context.cpp, llama-kv-cache.cpp,
llama-kv-cache-iswa.cpp, llama-memory-recurrent.cpp, llama-hparams.cpp), read from GGUF metadata:

- The context is padded to 256 cells. Every layer with KV heads caches, per cell, a K row of
  head_count_kv x key_length and a V row of head_count_kv x value_length values (f16 by default).
  With flash attention off, V is stored transposed and every layer's V row is the widest one.
- A layer with 0 KV heads (LFM2's short convolution) has no KV cache: what it keeps between
  tokens is a recurrent state of (shortconv.l_cache - 1) past inputs, n_embd wide, in f32, for
  the whole sequence (`recurrent_state_bytes`), not per cell.
- Multi-head latent attention (DeepSeek-V2/V3: key_length_mla and value_length_mla present) caches
  only K: one latent per token (kv_lora_rank + the RoPE key, written as key_length with one KV
  head); V is rebuilt from the latent, so there is no V cache.
- Sliding-window layers (Gemma 2/3, gpt-oss, LFM2 with a window) get their own cache of
  PAD256(min(n_ctx, sliding_window + n_ubatch)) cells unless swa_full asks for full-size caches.
  Which layers slide comes from the per-layer `sliding_window_pattern` array when the GGUF has
  one, else from the architecture's built-in period (`SLIDING_WINDOW_ARCHS`).
- Multi-token-prediction layers (`nextn_predict_layers`, counted in block_count) are not cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gguf.constants import Keys

from edge_ai.gguf_file import GGUFInfo

CELL_PAD = 256  # llama_context pads n_ctx, and llama_kv_cache_iswa the SWA cache, to this
F32_BYTES = 4  # the recurrent state is always f32
# Bytes per cached value of each KV cache type llama.cpp offers (-ctk / -ctv): a q8_0 block packs 32
# values in 34 bytes, a q4_0 block in 18. Quantized V needs flash attention (V is not transposed then).
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
                 "q4_1": 20 / 32, "q4_0": 18 / 32}


@dataclass(frozen=True)
class SlidingWindow:
    """How an architecture marks sliding-window layers when the GGUF has no per-layer pattern."""

    period: int  # layer il slides unless il % period == period - 1; 0: every attention layer slides
    default_window: int = 0  # window when the GGUF has no sliding_window key (0: no sliding layers)
    reads_pattern: bool = True  # whether llama.cpp reads sliding_window_pattern (LFM2 does not)


# From each family's load_arch_hparams in llama.cpp (models/<family>.cpp). Architectures not listed
# have no sliding-window cache in llama.cpp (Phi-3's is disabled there, Qwen2/Mistral ignore theirs).
SLIDING_WINDOW_ARCHS = {
    "gemma2": SlidingWindow(period=2, default_window=4096),
    "gemma3": SlidingWindow(period=6),
    "gpt-oss": SlidingWindow(period=2),
    "lfm2": SlidingWindow(period=0, reads_pattern=False),
}


@dataclass(frozen=True)
class Layer:
    """What one layer caches per cell (values, not bytes) and whether it uses the sliding-window cache."""

    k: int
    v: int
    sliding: bool


class _Meta:
    """One architecture's hyperparameters, filled in as llama.cpp defaults them."""

    def __init__(self, info: GGUFInfo) -> None:
        self.meta = info.metadata
        self.arch = info.architecture or ""
        self.n_layer = self.int(Keys.LLM.BLOCK_COUNT)

    def get(self, template: str) -> Any:
        return self.meta.get(template.format(arch=self.arch))

    def int(self, template: str, default: int = 0) -> int:
        value = self.get(template)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    def per_layer(self, template: str, default: int) -> list[int]:
        """A key llama.cpp reads with get_key_or_arr: one value for every layer, or one per layer.

        A per-layer array too long for the header reader (an ArraySummary) counts as `default`,
        the larger value, so the estimate stays an upper bound."""
        value = self.get(template)
        if isinstance(value, list) and len(value) == self.n_layer:
            return [int(v) for v in value]
        return [self.int(template, default)] * self.n_layer


def _sliding_layers(m: _Meta) -> tuple[list[bool], int]:
    """(whether each layer slides, the window), as the family's load_arch_hparams sets them."""
    rule = SLIDING_WINDOW_ARCHS.get(m.arch)
    window = m.int(Keys.Attention.SLIDING_WINDOW, rule.default_window) if rule else 0
    if rule is None or window <= 0:
        return [False] * m.n_layer, 0
    pattern = m.get(Keys.Attention.SLIDING_WINDOW_PATTERN) if rule.reads_pattern else None
    if isinstance(pattern, list) and len(pattern) == m.n_layer:
        return [bool(p) for p in pattern], window
    period = m.int(Keys.Attention.SLIDING_WINDOW_PATTERN, rule.period) if rule.reads_pattern else rule.period
    return [period == 0 or il % period < period - 1 for il in range(m.n_layer)], window


def cache_layers(info: GGUFInfo) -> tuple[list[Layer], int]:
    """(each KV-cached layer, the sliding window or 0): the shape of llama.cpp's KV cache for `info`."""
    m = _Meta(info)
    n_head = m.per_layer(Keys.Attention.HEAD_COUNT, 0)
    n_head_kv = m.per_layer(Keys.Attention.HEAD_COUNT_KV, max(n_head, default=0))
    n_embd = m.int(Keys.LLM.EMBEDDING_LENGTH)
    head_dim = n_embd // n_head[0] if n_head and n_head[0] else 0
    key_len = m.int(Keys.Attention.KEY_LENGTH, head_dim)
    value_len = m.int(Keys.Attention.VALUE_LENGTH, head_dim)
    key_len_swa = m.int(Keys.Attention.KEY_LENGTH_SWA, key_len)
    value_len_swa = m.int(Keys.Attention.VALUE_LENGTH_SWA, value_len)
    mla = m.int(Keys.Attention.KEY_LENGTH_MLA) > 0 and m.int(Keys.Attention.VALUE_LENGTH_MLA) > 0
    sliding, window = _sliding_layers(m)
    widths = [(kv * (key_len_swa if s else key_len), 0 if mla else kv * (value_len_swa if s else value_len))
              for kv, s in zip(n_head_kv, sliding, strict=True)]
    v_max = max((v for _, v in widths), default=0)  # V transposed (no flash attention): the widest row
    cached = m.n_layer - m.int(Keys.LLM.NEXTN_PREDICT_LAYERS)
    layers = [Layer(k, v_max if v else 0, s) for (k, v), s in zip(widths[:cached], sliding[:cached], strict=True)
              if k]
    return layers, window


def _pad(n: int) -> int:
    return -(-n // CELL_PAD) * CELL_PAD


def kv_cache_bytes(info: GGUFInfo, n_ctx: int, *, n_ubatch: int = 512, swa_full: bool = False,
                   type_k: str = "f16", type_v: str = "f16") -> int:
    """Bytes of the KV cache llama.cpp allocates for `n_ctx` tokens of one sequence, micro-batches
    of `n_ubatch` tokens (a sliding-window cache holds the window plus one micro-batch), with K and V
    stored as `type_k` / `type_v` (keys of KV_TYPE_BYTES)."""
    layers, window = cache_layers(info)
    cells = _pad(n_ctx)
    swa_cells = cells if swa_full else _pad(min(cells, window + n_ubatch))
    k_bytes, v_bytes = KV_TYPE_BYTES[type_k], KV_TYPE_BYTES[type_v]
    return round(sum((layer.k * k_bytes + layer.v * v_bytes) * (swa_cells if layer.sliding else cells)
                     for layer in layers))


def recurrent_state_bytes(info: GGUFInfo, n_seq: int = 1) -> int:
    """Bytes of the recurrent state of a hybrid's convolution layers for `n_seq` parallel sequences (f32).

    LFM2's short convolution keeps the last l_cache - 1 inputs of width n_embd per layer and per
    sequence, whatever the context length; llama.cpp allocates it as llama_memory_recurrent (one
    row per sequence), not as KV cache."""
    m = _Meta(info)
    l_cache = m.int(Keys.ShortConv.L_CACHE)
    if l_cache <= 1:
        return 0
    conv_layers = m.per_layer(Keys.Attention.HEAD_COUNT_KV, 1).count(0)
    return conv_layers * m.int(Keys.LLM.EMBEDDING_LENGTH) * (l_cache - 1) * F32_BYTES * max(1, n_seq)

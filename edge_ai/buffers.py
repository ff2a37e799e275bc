"""The memory llama.cpp allocates besides weights and KV cache: compute and output buffers, and
the CPU's repacked weight copies.

The compute buffer is ggml's graph allocator peak for one micro-batch (n_ubatch tokens, reserved
at the worst case). Tensors are freed as soon as their last user ran, so the peak is the larger of
two phases, each measured against llama.cpp 0.3.36's `compute buffer size` line:
- the LM head: f32 logits of n_vocab x n_ubatch plus two n_embd x n_ubatch activations
  (Gemma 3 270M: 512 + 2.5 MiB = 514.50 MiB logged);
- attention: one layer's KQ scores, n_kv x n_ubatch x n_head f32 (none with flash attention, which
  tiles them), plus one KQ mask per cache (full and sliding window) of n_kv x n_ubatch values, f32,
  or f16 with flash attention, plus the layer's activations (tiny Qwen2-MoE at 4096: 32 + 8 + ~0.9
  MiB = 40.90 MiB logged; 4.89 MiB with flash attention). The activations term (7 x n_embd per
  token, plus twice the Q width beyond n_embd without flash attention) is fitted to the tiny models;
  at real sizes it is a few MiB beside the other terms.
"""

from __future__ import annotations

from gguf.constants import Keys

from edge_ai.gguf_file import GGUFInfo
from edge_ai.hardware import cpu_flags
from edge_ai.kv_cache import CELL_PAD, cache_layers

F32 = 4
F16 = 2
# Weight types ggml-cpu repacks into interleaved copies for its AVX2 / NEON matmul kernels (an extra
# buffer, "CPU_REPACK", beside the mapped file); rows must come in groups of 8.
REPACKED_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL"})
REPACK_FLAGS = frozenset({"avx2", "asimd", "neon"})


def _arch_int(info: GGUFInfo, template: str) -> int:
    value = info.metadata.get(template.format(arch=info.architecture or ""))
    if isinstance(value, list):  # per-layer: the widest layer sizes the buffer
        value = max((v for v in value if isinstance(v, int)), default=0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _pad(n: int) -> int:
    return -(-n // CELL_PAD) * CELL_PAD


def compute_buffer_bytes(info: GGUFInfo, n_vocab: int, n_ctx: int, *, n_ubatch: int = 512,
                         flash_attn: bool = False, swa_full: bool = False) -> int:
    """Peak compute buffer of one micro-batch of `n_ubatch` tokens at context `n_ctx` (module docstring)."""
    n_embd = _arch_int(info, Keys.LLM.EMBEDDING_LENGTH)
    n_head = _arch_int(info, Keys.Attention.HEAD_COUNT)
    head = (n_vocab + 2 * n_embd) * n_ubatch * F32
    layers, window = cache_layers(info)
    cells = _pad(n_ctx)
    kinds = {cells if swa_full or not layer.sliding else _pad(min(cells, window + n_ubatch)) for layer in layers}
    n_kv = max(kinds, default=0)
    scores = 0 if flash_attn else n_kv * n_ubatch * n_head * F32
    masks = sum(kinds) * n_ubatch * (F16 if flash_attn else F32)
    extra_q = 0 if flash_attn else 2 * max(0, n_head * head_dim(info) - n_embd)
    activations = (7 * n_embd + extra_q) * n_ubatch * F32
    return max(head, scores + masks + activations)


def head_dim(info: GGUFInfo) -> int:
    """Values per attention head in a K row (key_length, else n_embd / n_head)."""
    n_embd = _arch_int(info, Keys.LLM.EMBEDDING_LENGTH)
    n_head = _arch_int(info, Keys.Attention.HEAD_COUNT)
    return _arch_int(info, Keys.Attention.KEY_LENGTH) or (n_embd // n_head if n_head else 0)


def output_buffer_bytes(n_vocab: int) -> int:
    """The logits of the one token a decode step outputs (f32), host memory."""
    return n_vocab * F32


def repacked_bytes(info: GGUFInfo, flags: set[str] | None = None) -> int:
    """Bytes ggml-cpu copies into its repacked layout on this CPU (`flags` from /proc/cpuinfo).

    The token embedding is only ever row-read, so it is never repacked."""
    if not (flags if flags is not None else cpu_flags()) & REPACK_FLAGS:
        return 0
    return sum(t.nbytes for t in info.tensors
               if t.ggml_type in REPACKED_TYPES and len(t.shape) == 2 and t.shape[1] % 8 == 0
               and not t.name.startswith("token_embd."))

"""llama.cpp's sampler chain, and a GBNF grammar applied around it the way llama.cpp's server does.

`SchemaConverter` (JSON schema -> GBNF) is llama-cpp-python's, re-exported so that
runtime/llm/grammar.py does not reach into the package itself.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
from llama_cpp._internals import LlamaSampler
from llama_cpp.llama_grammar import SchemaConverter

from edge_ai.errors import EdgeAIError
from runtime.llamacpp.model import Llama

__all__ = ["Chain", "Grammar", "SchemaConverter"]


class Chain:
    """One reply's sampler chain: logit bias, penalties, then greedy or top-k / top-p / min-p /
    temperature / seeded draw. Built here rather than by `Llama.generate`, which has no logit bias."""

    def __init__(self, n_vocab: int, *, logit_bias: dict[int, float], penalty_last_n: int, repeat: float,
                 frequency: float, presence: float, temperature: float, top_k: int, top_p: float, min_p: float,
                 seed: int) -> None:
        self._chain = chain = LlamaSampler()
        if logit_bias:
            chain.add_logit_bias(n_vocab, logit_bias)
        chain.add_penalties(n_vocab, penalty_last_n=penalty_last_n, penalty_repeat=repeat,
                            penalty_freq=frequency, penalty_present=presence)
        if temperature == 0:
            chain.add_greedy()
        else:
            chain.add_top_k(top_k)
            chain.add_top_p(top_p, 1)
            chain.add_min_p(min_p, 1)
            chain.add_temp(temperature)
            chain.add_dist(seed)

    def sample(self, llm: Llama) -> int:
        """A token from the logits of the last evaluated position (accepted into the chain)."""
        return self._chain.sample(llm._ctx, -1)

    def close(self) -> None:
        self._chain.close()


_CANDIDATE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


class Grammar:
    """A GBNF grammar applied as llama.cpp's own server does, cheaply: the chain picks a token from
    all candidates, the grammar checks only that one, and only when it refuses is the grammar run
    over the whole vocabulary and the token picked again. Checking every candidate every step
    (the grammar inside the chain) costs ~10x the decode time on a 262k-token vocabulary."""

    def __init__(self, llm: Llama, gbnf: str) -> None:
        self._sampler = llama_cpp.llama_sampler_init_grammar(llama_cpp.llama_model_get_vocab(llm.model),
                                                             gbnf.encode(), b"root")
        if not self._sampler:  # llama.cpp prints the reason on stderr, nowhere we can read it
            raise EdgeAIError("llama.cpp could not parse the grammar; check it against the GBNF rules "
                              "in llama.cpp's grammars/README.md")
        self._buffer = (llama_cpp.llama_token_data * llm.n_vocab())()
        self._candidates = np.frombuffer(self._buffer, dtype=_CANDIDATE)
        self._one = (llama_cpp.llama_token_data * 1)()

    def _pick(self, chain: Chain, logits: np.ndarray, constrained: bool) -> int:
        self._candidates["id"] = np.arange(len(logits), dtype=np.int32)
        self._candidates["logit"] = logits
        self._candidates["p"] = 0.0
        array = llama_cpp.llama_token_data_array(self._buffer, len(logits), -1, False)
        if constrained:
            llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(array))
        llama_cpp.llama_sampler_apply(chain._chain.sampler, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def _allows(self, token: int) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 1.0, 0.0
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(llama_cpp.llama_token_data_array(self._one, 1, -1, False)))
        return self._one[0].logit != -np.inf

    def sample(self, chain: Chain, logits: np.ndarray) -> int:
        """A token from `logits` that the grammar allows, accepted into both the grammar and `chain`."""
        token = self._pick(chain, logits, constrained=False)
        if not self._allows(token):
            token = self._pick(chain, logits, constrained=True)
        llama_cpp.llama_sampler_accept(self._sampler, token)
        chain._chain.accept(token)
        return token

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self._sampler)

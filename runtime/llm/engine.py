"""The LLM engine: one GGUF model loaded with llama-cpp-python, chatting as a stream of events.

Why not `Llama.create_chat_completion`: we need cancellation inside prefill (chunked, checked
between chunks) and after every token, exact per-token timings, a bounded chat-template sandbox,
KV-cache prefix reuse that stays correct for sliding-window models, and an overflow policy that
drops old turns instead of failing. Everything blocking runs in the caller's thread; `cancel()` is
safe to call from any other thread.

With a vision projector (`EngineOptions.mmproj`) a user message may carry an image; it is tokenized
by llama.cpp's multimodal library into a run of placeholder ids (runtime.llamacpp.mtmd) and encoded
during prefill, so prefix reuse keeps an image already in the cache for the turns after it.
"""

from __future__ import annotations

import codecs
import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ai.chat_format import FormatChoice, choose_format
from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import GGUFInfo, check_gguf
from edge_ai.hardware import default_threads
from edge_ai.memory import check_fits_in_ram
from runtime.llamacpp import model as llama
from runtime.llamacpp import overrides
from runtime.llamacpp.load import ggml_type, load_llama
from runtime.llamacpp.mtmd import Images, Projector, check_projector
from runtime.llamacpp.residency import lock_file_ranges, pages_randomly, read_around_bytes, smallest_expert_slab
from runtime.llamacpp.sampling import Chain, Grammar
from runtime.llm.context import FittedPrompt, Message, fit_messages
from runtime.llm.events import DoneEvent, Event, FinishReason, Metrics, SamplingParams, TokenEvent, TokenLogprob
from runtime.llm.templates import BUILTIN_FORMATS, TRANSCRIPT, BuiltinFormat, ChatTemplate, UnsafeTemplateError
from runtime.planner.residency import resident_ranges

log = logging.getLogger(__name__)

# Prompt tokens evaluated per llama.cpp call during prefill: small enough that a cancel lands
# within ~0.25 s on a laptop CPU, large enough to keep prefill throughput (measured equal to 512).
PREFILL_CHUNK = 128
# When a conversation outgrows the context, old turns are dropped in blocks of this fraction of
# the context (runtime.llm.context), so the cached prompt prefix survives many turns. A cache that
# can shift keeps the turns after a dropped block (llama.cpp's context shift), so half is enough;
# one that cannot (sliding-window layers) prefills what is kept again, so it drops more at once.
DROP_BLOCK_SHIFT = 0.5
DROP_BLOCK_NO_SHIFT = 0.75
# A context shift is looked for by matching this many prompt tokens in the cache, and done only
# when it saves at least SHIFT_MIN_TOKENS of prefill.
SHIFT_PROBE = 16
SHIFT_MIN_TOKENS = 32
# Where a message's image goes in the rendered prompt (before its text): split off before tokenizing,
# so no text a user can type stands for an image.
IMAGE_MARK = f"\x00image-{uuid.uuid4().hex}\x00"


@dataclass(frozen=True)
class EngineOptions:
    """How to load a model; 0 means 'choose from the hardware / the model'."""

    context: int = 4096
    threads: int = 0
    batch: int = 512
    swa_full: bool = False
    chat_format: str = "auto"  # see edge_ai.chat_format.FORMAT_CHOICES
    # Placement, usually from a saved memory plan (runtime.planner): KV cache type (a quantized one
    # needs flash attention), layers on the GPU, (regex, device) tensor overrides, mmap/mlock.
    kv_type: str = "f16"
    flash_attn: bool = False
    n_gpu_layers: int = 0
    tensor_overrides: tuple[tuple[str, str], ...] = ()
    use_mmap: bool = True
    use_mlock: bool = False  # llama.cpp's: locks the whole mapping
    # A model bigger than RAM run from mmap (a plan's "mmap-paged"): lock only the always-used weights
    # and these hot experts ((layer, expert ids) pairs) in RAM, so that only cold experts page from disk.
    lock_resident: bool = False
    hot_experts: tuple[tuple[int, tuple[int, ...]], ...] = ()
    # llama.cpp RPC servers (host:port) holding the n_gpu_layers offloaded layers, split between their
    # devices by tensor_split (layers per device, in order); from a plan made with `--rpc`.
    rpc_servers: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] = ()
    # A vision-language model's projector (its mmproj .gguf): messages may then carry images.
    mmproj: str = ""


class Engine:
    """A loaded model. Use `chat()` / `complete()` from one worker thread, `cancel()` from anywhere."""

    def __init__(self, model_path: str | Path, *, name: str | None = None,
                 options: EngineOptions = EngineOptions()) -> None:
        self.path = Path(model_path)
        self.info: GGUFInfo = check_gguf(self.path)
        self.name = name or self.info.name
        trained = self.info.context_length or options.context
        self.n_ctx = min(options.context, trained)
        self.threads = options.threads or default_threads()
        self.chat_format: FormatChoice = choose_format(self.info, options.chat_format)
        if not options.rpc_servers:  # spread over RPC servers, the plan checked every machine's share
            check_fits_in_ram(self.info, self.n_ctx, options.batch, kv_type=options.kv_type,
                              flash_attn=options.flash_attn, swa_full=options.swa_full, use_mmap=options.use_mmap,
                              use_mlock=options.use_mlock)
        for key, source in self.info.chat_templates.items():  # llama-cpp-python's own error would not name it
            origin = self.path.name if key == "tokenizer.chat_template" else f"{self.path.name} ({key})"
            ChatTemplate(source, bos_token="", eos_token="", origin=origin)
        overrides.check_patterns(self.info, options.tensor_overrides)
        if options.mmproj:  # a wrong file is said before the model loads
            check_projector(Path(options.mmproj), self.info.embedding_length)
        kv_type = ggml_type(options.kv_type)
        split = {"tensor_split": list(options.tensor_split)} if options.tensor_split else {}
        self._llm = load_llama(self.path, dict(
            n_ctx=self.n_ctx, n_batch=options.batch, n_ubatch=options.batch, n_threads=self.threads,
            n_threads_batch=self.threads, swa_full=options.swa_full, type_k=kv_type, type_v=kv_type,
            flash_attn=options.flash_attn, n_gpu_layers=options.n_gpu_layers, use_mmap=options.use_mmap,
            use_mlock=options.use_mlock, **split), tensor_overrides=options.tensor_overrides, info=self.info,
            rpc_servers=options.rpc_servers)
        if options.rpc_servers:
            log.info("%s: %d of %d layers (the output layer counts as one) on RPC servers %s, split %s",
                     self.path.name, min(options.n_gpu_layers, (self.info.block_count or 0) + 1),
                     (self.info.block_count or 0) + 1, ",".join(options.rpc_servers), list(options.tensor_split))
        self.locked_bytes = 0
        if options.lock_resident:
            try:
                random_paging = pages_randomly(read_around_bytes(self.path), smallest_expert_slab(self.info))
                self.locked_bytes = lock_file_ranges(self.path, resident_ranges(self.info, dict(options.hot_experts)),
                                                     random_paging=random_paging)
            except BaseException:
                self._llm.close()
                raise
        self._vocab = llama.vocab(self._llm)
        self._n_swa = llama.n_swa(self._llm)
        self._recurrent = llama.is_recurrent(self._llm)
        self._memory = llama.Memory(self._llm.ctx)
        self._can_shift = self._memory.can_shift and not self._recurrent
        self._projector: Projector | None = None
        try:
            self.template, self._format = self._choose_template()
            self._turn_marker_ids = self._single_tokens(self._format.turn_markers)
            if options.mmproj:
                self._projector = Projector(Path(options.mmproj), self._llm)
        except BaseException:
            self._llm.close()
            raise
        self._images = Images()  # the current prompt's images, keyed by the ids standing for them; freed after chat()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._stop: threading.Event | None = None

    def _choose_template(self) -> tuple[ChatTemplate, BuiltinFormat]:
        """The template for `self.chat_format`, and the format's stops and turn markers.

        A file's own template comes with no extra stops (it marks turn ends as end-of-generation).
        """
        bos = llama.token_text(self._llm, self._llm.token_bos())
        eos = llama.token_text(self._llm, self._llm.token_eos())
        choice = self.chat_format
        if choice.kind == "template":
            assert self.info.chat_template is not None  # choose_format checked it
            template = ChatTemplate(self.info.chat_template, bos_token=bos, eos_token=eos, origin=self.path.name)
            _probe(template)
            return template, BuiltinFormat("template", self.info.chat_template)
        fmt = BUILTIN_FORMATS[choice.builtin] if choice.kind == "builtin" and choice.builtin else TRANSCRIPT
        template = ChatTemplate(fmt.template, bos_token=bos, eos_token=eos, origin=f"built-in {fmt.name} format")
        return template, fmt

    def _single_tokens(self, texts: Sequence[str]) -> frozenset[int]:
        """The ids of `texts` that are one token each: for built-in turn formats the model may not
        mark a turn's end as end-of-generation, so its turn-marker tokens also end a reply."""
        ids = (self._llm.tokenize(text.encode(), add_bos=False, special=True) for text in texts)
        return frozenset(one[0] for one in ids if len(one) == 1)

    @property
    def sees_images(self) -> bool:
        """Whether messages may carry images (a vision projector is loaded)."""
        return self._projector is not None

    @property
    def context_used(self) -> int:
        """Tokens currently held in the KV cache."""
        return self._llm.n_tokens

    def tokenize(self, text: str, *, special: bool = True, add_bos: bool = False) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def render(self, messages: Sequence[Message]) -> str:
        return self.template.render(messages, add_generation_prompt=True)

    def encode(self, messages: Sequence[Message]) -> list[int]:
        """Prompt tokens for a conversation (template, then tokenizer with special tokens parsed).

        The BOS token is added when the model wants one and the template did not write it, as
        llama.cpp's server does; never twice. A message's image goes before its text, as a run of
        placeholder ids (its chunk kept in `self._images` for the prefill).
        """
        images = [m["image"] for m in messages if m.get("image") is not None]
        if not images:
            tokens = self.tokenize(self.render(messages))
        elif self._projector is None:
            raise EdgeAIError(f"{self.name} was loaded without a vision projector, so it cannot see images; "
                              "set screen.vision_mmproj to its mmproj .gguf")
        else:
            text = self.render([{**{k: v for k, v in m.items() if k != "image"},
                                 "content": f"{IMAGE_MARK}\n{m['content']}" if m.get("image") is not None else m["content"]}
                                for m in messages])
            texts = text.split(IMAGE_MARK)
            if len(texts) != len(images) + 1:
                raise EdgeAIError(f"the chat template of {self.name} dropped or repeated a message with an image")
            pieces = [piece for pair in zip(texts, images) for piece in pair] + [texts[-1]]
            tokens = self._projector.tokenize(pieces, self._images)
        bos = self._llm.token_bos()
        if llama.adds_bos(self._llm) and bos >= 0 and tokens[:1] != [bos]:
            tokens.insert(0, bos)
        return tokens

    def fit(self, messages: Sequence[Message], max_tokens: int) -> FittedPrompt:
        """The prompt for `messages` with room left for a reply of up to `max_tokens` (at most a
        quarter of the context), old turns dropped in blocks when they do not fit."""
        reserve = min(max_tokens, self.n_ctx // 4)
        block = int(self.n_ctx * (DROP_BLOCK_SHIFT if self._can_shift else DROP_BLOCK_NO_SHIFT))
        return fit_messages(messages, self.encode, self.n_ctx - reserve, block=block, measure=self._message_tokens)

    def _message_tokens(self, message: Message) -> int:
        return len(self._llm.tokenize(message["content"].encode("utf-8"), add_bos=False, special=False))

    def cancel(self) -> None:
        """Stop the current reply after the token (or prefill chunk) in progress."""
        self._cancel.set()

    def _begin(self, stop: threading.Event | None) -> None:
        self._cancel.clear()
        self._stop = stop

    def _cancelled(self) -> bool:
        return self._cancel.is_set() or (self._stop is not None and self._stop.is_set())

    def chat(self, messages: Sequence[Message], sampling: SamplingParams = SamplingParams(), *,
             stop: threading.Event | None = None) -> Iterator[Event]:
        """Stream a reply to `messages` (OpenAI-style role/content dicts).

        `stop` is the caller's own cancel token: set before the engine is free, it still counts
        (a shared flag would be cleared when the reply starts).
        """
        with self._lock:
            start = time.perf_counter()
            self._begin(stop)
            try:
                prompt = self.fit(messages, sampling.max_tokens)
                fmt = self._format
                sampling = dataclasses.replace(sampling, stop=(*sampling.stop, *fmt.stops))
                yield from self._generate(prompt.tokens, sampling, start, prompt.dropped,
                                          strip_leading=fmt.strip_leading)
            finally:
                self._images.close()

    def complete(self, prompt: str, sampling: SamplingParams = SamplingParams(), *,
                 stop: threading.Event | None = None) -> Iterator[Event]:
        """Stream a plain continuation of `prompt` (no chat template); `stop` as in `chat`."""
        with self._lock:
            start = time.perf_counter()
            self._begin(stop)
            tokens = self.tokenize(prompt, special=False, add_bos=llama.adds_bos(self._llm))
            if not tokens:
                raise EdgeAIError("the prompt is empty; give some text to continue")
            if len(tokens) >= self.n_ctx:
                raise EdgeAIError(
                    f"the prompt is {len(tokens)} tokens but the context holds {self.n_ctx}; "
                    "shorten it or raise model.context"
                )
            yield from self._generate(tokens, sampling, start, 0)

    def _reusable_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading prompt tokens the KV cache already holds and can serve.

        At least one token is always re-evaluated so fresh logits exist. With a sliding-window
        cache (swa_full off) positions older than the window may have been pruned; if a rewind
        would need them, nothing is reused (llama.cpp's server applies the same rule). Recurrent
        and hybrid models (Mamba-style state) can only be extended, never rewound.
        """
        limit = min(self._llm.n_tokens, len(tokens) - 1)
        if limit <= 0:
            return 0
        differ = np.nonzero(self._llm.input_ids[:limit] != np.asarray(tokens[:limit]))[0]
        n_keep = int(differ[0]) if differ.size else limit
        while 0 < n_keep and tokens[n_keep] < 0 and tokens[n_keep - 1] == tokens[n_keep]:
            n_keep -= 1  # an image is decoded whole or not at all
        if self._recurrent and n_keep < self._llm.n_tokens:
            self._llm.reset()  # a recurrent state holds every token seen; it cannot drop a suffix
            return 0
        if n_keep > 0 and self._n_swa > 0:
            pos_min = self._memory.pos_min()
            if pos_min > max(0, n_keep - self._n_swa):
                n_keep = 0
        if not self._can_shift or min(tokens) < 0 or self._llm.input_ids[:self._llm.n_tokens].min(initial=0) < 0:
            return n_keep  # a run of image positions cannot be matched and moved like tokens
        return self._shift(tokens, n_keep)

    def _shift(self, tokens: Sequence[int], n_keep: int) -> int:
        """llama.cpp's context shift: when old turns were dropped from the prompt, the cache still
        holds the turns after them at later positions; remove the dropped ones and move the rest
        back instead of prefilling it again. Returns how many prompt tokens the cache now serves.
        """
        llm = self._llm
        probe = np.asarray(tokens[n_keep:n_keep + SHIFT_PROBE])
        cached = llm.input_ids[n_keep + 1:llm.n_tokens]
        if len(probe) < SHIFT_PROBE or len(cached) < SHIFT_PROBE:
            return n_keep
        hits = np.flatnonzero((np.lib.stride_tricks.sliding_window_view(cached, SHIFT_PROBE) == probe).all(axis=1))
        if not hits.size:
            return n_keep
        source = n_keep + 1 + int(hits[0])
        # the last prompt token is always evaluated again, for fresh logits (see _reusable_prefix)
        tail = min(len(tokens) - 1 - n_keep, llm.n_tokens - source)
        differ = np.flatnonzero(llm.input_ids[source:source + tail] != np.asarray(tokens[n_keep:n_keep + tail]))
        kept = int(differ[0]) if differ.size else tail
        if kept < SHIFT_MIN_TOKENS:
            return n_keep
        self._memory.move(source, -1, to=n_keep)
        llm.input_ids[n_keep:n_keep + kept] = tokens[n_keep:n_keep + kept]
        llm.n_tokens = n_keep + kept  # eval() drops the cells past this from the cache
        return n_keep + kept

    def _prefill(self, tokens: Sequence[int], n_keep: int) -> bool:
        """Evaluate the uncached prompt in small chunks; False if cancelled midway.

        The first reply token is sampled from the logits this leaves (`_sample`), so each prompt
        token is evaluated exactly once.
        """
        llm = self._llm
        llm.n_tokens = n_keep  # eval() drops every cached position from here on
        chunk = min(PREFILL_CHUNK, llm.n_batch)
        images = np.flatnonzero(np.asarray(tokens[n_keep:]) < 0) + n_keep
        pos = n_keep
        while pos < len(tokens):
            if self._cancelled():
                return False
            if tokens[pos] < 0:
                pos = self._decode_image(tokens[pos], pos)
                continue
            ahead = images[images > pos]
            end = min(pos + chunk, len(tokens), int(ahead[0]) if ahead.size else len(tokens))
            llm.eval(tokens[pos:end])
            pos = end
        return True

    def _decode_image(self, key: int, pos: int) -> int:
        """Encode the image `key` stands for and decode it at `pos`; the position after it."""
        assert self._projector is not None  # only encode() writes image ids, with a projector
        self._memory.truncate(pos)
        end = self._projector.evaluate(self._images[key], self._llm, pos)
        self._llm.input_ids[pos:end] = key
        self._llm.n_tokens = end
        return end

    def _generate(self, tokens: list[int], sampling: SamplingParams, start: float, dropped: int, *,
                  strip_leading: bool = False) -> Iterator[Event]:
        llm = self._llm
        n_keep = self._reusable_prefix(tokens)
        prefill_start = time.perf_counter()
        stream = _TextStream(sampling.stop, strip_leading=strip_leading)
        stamps: list[float] = []
        reason: FinishReason = "cancelled"
        ended_on_eog = False  # the end-of-turn token is sampled but is not part of the reply
        logprobs = _TokenLog()
        grammar = Grammar(self._llm, sampling.grammar) if sampling.grammar is not None else None  # fails at once
        chain = self._sampler_chain(sampling)
        try:
            if self._prefill(tokens, n_keep):
                prefill_end = time.perf_counter()
                reason = "length"
                for token in self._sample(chain, grammar):
                    stamps.append(time.perf_counter())
                    if llama.is_eog(self._vocab, token) or token in self._turn_marker_ids:
                        reason, ended_on_eog = "stop", True
                        break
                    start_offset = stream.decoded
                    text, stopped = stream.feed(llama.token_bytes(self._vocab, token))
                    if sampling.logprobs is not None:
                        logprobs.add(self._logprob(token, sampling.logprobs), start_offset, stream.decoded)
                    released = logprobs.release(len(stream.text), final=stopped)
                    if text or released:
                        yield TokenEvent(text, released)
                    if stopped:
                        reason = "stop"
                        break
                    if len(stamps) >= sampling.max_tokens or llm.n_tokens + 1 >= self.n_ctx:
                        break
                    if self._cancelled():
                        reason = "cancelled"
                        break
            else:
                prefill_end = time.perf_counter()
        finally:
            chain.close()
            if grammar is not None:
                grammar.close()
        tail = stream.finish()
        released = logprobs.release(len(stream.text), final=True)
        if tail or released:
            yield TokenEvent(tail, released)
        yield DoneEvent(reason, stream.text, self._metrics(tokens, n_keep, start, prefill_start, prefill_end,
                                                           stamps, ended_on_eog, dropped))

    def _sampler_chain(self, sampling: SamplingParams) -> Chain:
        """llama.cpp's sampler chain for one reply (a grammar is applied around it: see `Grammar`)."""
        n_vocab = self._llm.n_vocab()
        for token, _ in sampling.logit_bias:
            if not 0 <= token < n_vocab:  # llama.cpp would write outside its candidate array
                raise EdgeAIError(f"logit_bias names token {token}, but {self.name} has tokens 0 to {n_vocab - 1}")
        return Chain(n_vocab, logit_bias=dict(sampling.logit_bias), penalty_last_n=self._llm.last_n_tokens_size,
                     repeat=sampling.repeat_penalty, frequency=sampling.frequency_penalty,
                     presence=sampling.presence_penalty, temperature=sampling.temperature, top_k=sampling.top_k,
                     top_p=sampling.top_p, min_p=sampling.min_p,
                     seed=sampling.seed if sampling.seed >= 0 else random.getrandbits(31))

    def _sample(self, chain: Chain, grammar: Grammar | None) -> Iterator[int]:
        """Tokens from `chain`, the first from the logits the prefill left, so the last prompt token
        is evaluated once; each token is evaluated only when the next one is asked for."""
        llm = self._llm
        while True:
            token = chain.sample(llm) if grammar is None else grammar.sample(chain, llama.last_logits(llm))
            yield token
            llm.eval([token])

    def _logprob(self, token: int, top: int) -> TokenLogprob:
        """`token`'s log-probability and the `top` likeliest tokens', from the logits it was sampled
        from (the model's own distribution: no penalty, bias, grammar or temperature)."""
        logits = llama.last_logits(self._llm)
        shifted = logits.astype(np.float64) - logits.max()
        logp = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logp, top - 1)[:top] if top else np.zeros(0, dtype=int)
        best = best[np.argsort(-logp[best], kind="stable")]
        return TokenLogprob(llama.token_bytes(self._vocab, token), float(logp[token]),
                            tuple((llama.token_bytes(self._vocab, int(t)), float(logp[t])) for t in best))

    def _metrics(self, tokens: Sequence[int], n_keep: int, start: float, prefill_start: float,
                 prefill_end: float, stamps: list[float], ended_on_eog: bool, dropped: int) -> Metrics:
        generated = len(stamps) - (1 if ended_on_eog else 0)
        gaps = np.diff(stamps) * 1000 if len(stamps) > 1 else np.zeros(0)
        prefill_tokens = len(tokens) - n_keep
        prefill_time = prefill_end - prefill_start
        decode_time = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
        return Metrics(
            prompt_tokens=len(tokens), cached_tokens=n_keep, prefill_tokens=prefill_tokens,
            generated_tokens=generated,
            ttft_s=(stamps[0] - start) if stamps else 0.0,
            prefill_tok_s=prefill_tokens / prefill_time if prefill_time > 0 else 0.0,
            decode_tok_s=(len(stamps) - 1) / decode_time if decode_time > 0 else 0.0,
            itl_p50_ms=float(np.percentile(gaps, 50)) if gaps.size else 0.0,
            itl_p95_ms=float(np.percentile(gaps, 95)) if gaps.size else 0.0,
            total_s=time.perf_counter() - start,
            context_used=self._llm.n_tokens, context_size=self.n_ctx, dropped_messages=dropped,
        )

    def close(self) -> None:
        """Free the model now rather than at garbage collection."""
        if self._projector is not None:
            self._projector.close()
        self._llm.close()


def _probe(template: ChatTemplate) -> None:
    """Render a one-message chat at load so a hostile template refuses the file up front.

    Ordinary template errors (a template that insists on a system message, say) are left for the
    real conversation to report.
    """
    try:
        template.render([{"role": "user", "content": "hello"}])
    except UnsafeTemplateError:
        raise
    except EdgeAIError:
        pass


class _TokenLog:
    """Log-probabilities of sampled tokens, each handed out with the event that shows its text.

    Offsets are characters of the decoded reply: a token waits while any of its text is held
    back; once the reply ends (or is cut by a stop string) every token that reached into the
    shown text goes out, and the rest (a stop string's own tokens) never do.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[TokenLogprob, int, int]] = []

    def add(self, entry: TokenLogprob, start: int, end: int) -> None:
        self._pending.append((entry, start, end))

    def release(self, shown: int, *, final: bool) -> tuple[TokenLogprob, ...]:
        out = tuple(e for e, start, end in self._pending if end <= shown or (final and start < shown))
        self._pending = [] if final else [p for p in self._pending if p[2] > shown]
        return out


class _TextStream:
    """Bytes of tokens in, text out: UTF-8 decoded incrementally, stop strings held back and cut."""

    def __init__(self, stop: Sequence[str], *, strip_leading: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip_leading = strip_leading  # until the first visible character
        self._stop = [s for s in stop if s]
        self._pending = ""
        self._stopped = False
        self.text = ""

    def feed(self, data: bytes) -> tuple[str, bool]:
        """Return (text safe to show now, whether a stop string was reached)."""
        self._pending += self._decoder.decode(data)
        if self._strip_leading:
            self._pending = self._pending.lstrip(" \t")
            self._strip_leading = not self._pending
        hits = [i for i in (self._pending.find(s) for s in self._stop) if i >= 0]
        stopped = self._stopped = bool(hits)
        if stopped:
            out, self._pending = self._pending[:min(hits)], ""
        else:
            hold = max((n for s in self._stop for n in range(len(s) - 1, 0, -1)
                        if self._pending.endswith(s[:n])), default=0)
            cut = len(self._pending) - hold
            out, self._pending = self._pending[:cut], self._pending[cut:]
        self.text += out
        return out, stopped

    @property
    def decoded(self) -> int:
        """Characters decoded so far, shown or held back."""
        return len(self.text) + len(self._pending)

    def finish(self) -> str:
        """Text still held back when the reply ends (a partial stop string, an incomplete character);
        nothing after a stop string."""
        if self._stopped:
            return ""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        self.text += out
        return out

"""Parity and speed probes: run an exported folder and the source model (PyTorch) on the same inputs.

    probe = make_probe("feature-extraction", Path("all-MiniLM-L6-v2"))   # runs PyTorch once
    parity = probe.parity(Path("work/int8"))      # {"cos_mean": 0.993, "cos_min": 0.988, ...}
    problem = probe.over_budget(parity)           # None, or why this variant is not good enough
    seconds = probe.seconds_per_run(Path("work/int8"))

One probe per task, registered in `PROBES`. Each keeps the PyTorch reference from its construction
so fp32, int8 and int4 are all measured against the same numbers, and times the same inputs for
every variant (median of a few runs after a warm-up) so the speeds are comparable within one run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.onnx_session import open_session, zero_past_feeds

TIMED_RUNS = 5

# Sentences for embedding parity and speed: varied length, topics and punctuation.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Offline assistants keep every conversation on the laptop.",
    "How do I convert a Hugging Face model to ONNX?",
    "Quantization trades a little accuracy for a smaller, faster model.",
    "The meeting moved to Thursday at 3 pm because the room was booked.",
    "Whisper turns speech into text; the encoder sees 30 seconds of audio at a time.",
    "I left my umbrella on the train this morning.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "def add(a, b): return a + b",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Can you remind me to call my sister tomorrow?",
    "The stock market fell sharply after the announcement.",
    "A short one.",
    "Neural networks learn representations from data by gradient descent on a loss.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "Error 404: the page you requested could not be found on this server.",
]

# Text for language-model parity (top-1 agreement, KL divergence) and speed.
TEXT = ("Offline assistants keep data on the device. The model reads the text, predicts the next token, "
        "and the quantizer decides how many bits each weight keeps. A smaller model loads faster and fits "
        "in less memory, but every bit removed adds a little noise to the predictions.")


class Probe(Protocol):
    def parity(self, folder: Path) -> dict[str, float]: ...

    def over_budget(self, parity: dict[str, float]) -> str | None: ...

    def seconds_per_run(self, folder: Path) -> float: ...


def median_seconds(run: Callable[[], Any], repeats: int = TIMED_RUNS) -> float:
    """Median wall time of `repeats` calls of `run`, after one warm-up call."""
    run()  # warm-up: first-run allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _tokenizer(src: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(src, local_files_only=True)


class EmbeddingProbe:
    """Sentence embeddings (mean-pooled, L2-normalised hidden states) vs PyTorch: cosine per sentence."""

    # The bar the runtime's semantic search needs (issue 12): quantized embeddings must rank like fp32.
    MIN_COS = 0.98
    MIN_MEAN_COS = 0.99

    def __init__(self, src: Path, threads: int = 0) -> None:
        import torch
        from transformers import AutoModel

        self.threads = threads
        batch = _tokenizer(src)(SENTENCES, padding=True, return_tensors="np")
        self.feeds = {k: v.astype(np.int64) for k, v in batch.items()}
        model = AutoModel.from_pretrained(src, local_files_only=True).eval()
        with torch.no_grad():
            hidden = model(**{k: torch.from_numpy(v) for k, v in self.feeds.items()}).last_hidden_state.numpy()
        self.hidden = hidden
        self.reference = self._pool(hidden)

    def _pool(self, hidden: np.ndarray) -> np.ndarray:
        mask = self.feeds["attention_mask"][..., None].astype(np.float32)
        mean = (hidden * mask).sum(1) / mask.sum(1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    def _run(self, folder: Path) -> tuple[Any, dict[str, np.ndarray]]:
        session = open_session(folder / "model.onnx", self.threads)
        names = {i.name for i in session.get_inputs()}
        return session, {k: v for k, v in self.feeds.items() if k in names}

    def parity(self, folder: Path) -> dict[str, float]:
        session, feeds = self._run(folder)
        hidden = session.run(None, feeds)[0]
        cos = (self._pool(hidden) * self.reference).sum(1)
        mask = self.feeds["attention_mask"].astype(bool)
        return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                "max_abs_diff": float(np.abs(hidden - self.hidden)[mask].max())}

    def over_budget(self, parity: dict[str, float]) -> str | None:
        if parity["cos_min"] < self.MIN_COS or parity["cos_mean"] < self.MIN_MEAN_COS:
            return (f"embedding cosine vs PyTorch mean {parity['cos_mean']:.4f} / min {parity['cos_min']:.4f} "
                    f"is below the budget ({self.MIN_MEAN_COS} / {self.MIN_COS})")
        return None

    def seconds_per_run(self, folder: Path) -> float:
        session, feeds = self._run(folder)
        return median_seconds(lambda: session.run(None, feeds))


class CausalLMProbe:
    """Next-token distributions over `TEXT` vs PyTorch: top-1 agreement and KL(PyTorch || ONNX)."""

    MIN_TOP1 = 0.9  # llama.cpp's Q4_K_M keeps ~95% on real models; below 90% answers visibly change
    MAX_KLD = 0.05  # mean nats; about Q4_K_M's on Llama-class models

    def __init__(self, src: Path, threads: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.threads = threads
        ids = _tokenizer(src)(TEXT, return_tensors="np")["input_ids"][:, :128].astype(np.int64)
        self.ids = ids
        model = AutoModelForCausalLM.from_pretrained(src, local_files_only=True).eval()
        with torch.no_grad():
            self.reference = model(torch.from_numpy(ids)).logits[0].float().numpy()

    def _feeds(self, session: Any) -> dict[str, np.ndarray]:
        n = self.ids.shape[1]
        candidates = {"input_ids": self.ids, "attention_mask": np.ones_like(self.ids),
                      "position_ids": np.arange(n, dtype=np.int64)[None]}
        names = {i.name for i in session.get_inputs()}
        return {**{k: v for k, v in candidates.items() if k in names}, **zero_past_feeds(session)}

    def _logits(self, folder: Path) -> np.ndarray:
        session = open_session(folder / "model.onnx", self.threads)
        return session.run(["logits"], self._feeds(session))[0][0]

    def parity(self, folder: Path) -> dict[str, float]:
        logits = self._logits(folder)
        ref_logp = _log_softmax(self.reference)
        logp = _log_softmax(logits.astype(np.float64))
        kld = (np.exp(ref_logp) * (ref_logp - logp)).sum(-1)
        top1 = (self.reference.argmax(-1) == logits.argmax(-1)).mean()
        return {"top1": float(top1), "kld_mean": float(kld.mean()),
                "max_abs_diff": float(np.abs(logits - self.reference).max())}

    def over_budget(self, parity: dict[str, float]) -> str | None:
        if parity["top1"] < self.MIN_TOP1 or parity["kld_mean"] > self.MAX_KLD:
            return (f"top-1 agreement {parity['top1']:.1%} / KLD {parity['kld_mean']:.4f} vs PyTorch is outside "
                    f"the budget (>= {self.MIN_TOP1:.0%} / <= {self.MAX_KLD})")
        return None

    def seconds_per_run(self, folder: Path) -> float:
        session = open_session(folder / "model.onnx", self.threads)
        feeds = self._feeds(session)
        return median_seconds(lambda: session.run(["logits"], feeds))


class SpeechProbe:
    """Whisper on clear espeak-ng speech (three sentences, ~12 s): the word error rate of the runtime's
    own transcript (`runtime.audio.onnx_whisper`) against the spoken text, next to PyTorch's, plus
    teacher-forced top-1 agreement and KLD over the PyTorch transcript and the encoder's largest
    difference. The budget is on what users hear about: at most one point of WER more than PyTorch
    (the teacher-forced numbers drift more for a quantized decoder without changing words)."""

    MAX_EXTRA_WER = 0.01
    MAX_TOKENS = 96  # per transcript: the text is ~45 tokens; a model that never stops is cut here

    def __init__(self, src: Path, threads: int = 0) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration

        from convert.onnx.speech import WER_SENTENCES, speak, word_errors
        from runtime.audio.mel import log_mel_spectrogram, pad_or_trim

        self.threads = threads
        self.spoken = " ".join(WER_SENTENCES[:3])
        self.samples = speak(self.spoken)
        model = WhisperForConditionalGeneration.from_pretrained(src, local_files_only=True).eval()
        self.features = log_mel_spectrogram(pad_or_trim(self.samples), model.config.num_mel_bins)[None]
        features = torch.from_numpy(self.features)
        generation = model.generation_config
        prompt = [generation.decoder_start_token_id, generation.lang_to_id["<|en|>"],
                  generation.task_to_id["transcribe"], generation.no_timestamps_token_id]
        with torch.no_grad():
            generated = model.generate(features, language="en", task="transcribe", do_sample=False, num_beams=1,
                                       max_new_tokens=self.MAX_TOKENS)[0].tolist()
            if generated[:len(prompt)] == prompt:  # transformers versions differ in returning the prompt
                generated = generated[len(prompt):]
            transcript = [t for t in generated if t != model.config.eos_token_id]
            self.sequence = np.array([prompt + transcript], dtype=np.int64)
            self.encoded = model.model.encoder(features).last_hidden_state.numpy()
            self.reference = model(input_features=features,
                                   decoder_input_ids=torch.from_numpy(self.sequence)).logits[0].numpy()
        self.prompt = len(prompt)
        self.n_tokens = len(transcript)  # the runtime decodes as many, so a model that never stops compares too
        self.text = self._decode(src, transcript)
        errors, words = word_errors(self.spoken, self.text)
        self.pytorch_wer = errors / words

    @staticmethod
    def _decode(src: Path, tokens: list[int]) -> str:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(src / "tokenizer.json")).decode(tokens, skip_special_tokens=True)

    def parity(self, folder: Path) -> dict[str, float]:
        from convert.onnx.speech import word_errors
        from runtime.audio.onnx_whisper import OnnxWhisper

        encoder = open_session(folder / "encoder_model.onnx", self.threads)
        encoded = encoder.run(None, {"input_features": self.features})[0]
        decoder = open_session(folder / "decoder_model.onnx", self.threads)
        logits = decoder.run(["logits"], {"input_ids": self.sequence, "encoder_hidden_states": encoded})[0][0]
        scored = slice(self.prompt - 1, self.sequence.shape[1] - 1)  # positions predicting the transcript
        ref_logp, logp = _log_softmax(self.reference[scored]), _log_softmax(logits[scored])
        kld = (np.exp(ref_logp) * (ref_logp - logp)).sum(-1)
        top1 = (self.reference[scored].argmax(-1) == logits[scored].argmax(-1)).mean()
        text = OnnxWhisper(folder, threads=self.threads).transcribe(self.samples, self._options()).text
        errors, words = word_errors(self.spoken, text)
        return {"wer": errors / words, "wer_pytorch": self.pytorch_wer, "top1": float(top1),
                "kld_mean": float(kld.mean()), "encoder_max_abs_diff": float(np.abs(encoded - self.encoded).max())}

    def over_budget(self, parity: dict[str, float]) -> str | None:
        if parity["wer"] > self.pytorch_wer + self.MAX_EXTRA_WER:
            return (f"WER {parity['wer']:.1%} on the probe speech is more than {self.MAX_EXTRA_WER:.0%} above "
                    f"PyTorch's {self.pytorch_wer:.1%}")
        return None

    def seconds_per_run(self, folder: Path) -> float:
        from runtime.audio.onnx_whisper import OnnxWhisper

        stt = OnnxWhisper(folder, threads=self.threads)
        options = self._options()
        return median_seconds(lambda: stt.transcribe(self.samples, options))

    def _options(self) -> Any:
        from runtime.audio.onnx_whisper import DecodeOptions

        # greedy only, like the PyTorch reference: a fallback would time and score other decodes
        return DecodeOptions(timestamps=False, max_tokens=max(self.n_tokens, 1), temperatures=(0.0,))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


PROBES: dict[str, Callable[[Path, int], Probe]] = {
    "feature-extraction": EmbeddingProbe,
    "text-generation-with-past": CausalLMProbe,
    "automatic-speech-recognition": SpeechProbe,
}


def make_probe(task: str, src: Path, threads: int = 0) -> Probe:
    """The probe for `task`, with its PyTorch reference computed from `src`."""
    return PROBES[task](src, threads)

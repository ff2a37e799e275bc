"""llama.cpp's multimodal library (mtmd): a vision projector beside a loaded model, so that images go
into the engine's own prompt (runtime.llm.engine).

    check_projector(mmproj_path, embedding_width)       # a wrong file is one line
    projector = Projector(mmproj_path, llm)              # llama.cpp's reason if the pair does not load
    images = Images()
    tokens = projector.tokenize(["<text before>", pixels, "<text after>"], images)
    end = projector.evaluate(images[tokens[i]], llm, i)  # the image encoded and decoded at position i
    images.close(); projector.close()

A projector is a CLIP-style image encoder whose output lands in the model's embedding space. In the
token list an image is a run of one negative id (from a hash of its pixels) per position it takes, so
the engine's prompt-prefix reuse treats images like tokens: the same picture at the same place is
served from the KV cache and not encoded again; a different one is.

Why not llama-cpp-python's MTMDChatHandler: it clears the KV cache on every call (no prefix reuse:
the image is encoded again each turn), it goes through `Llama.create_chat_completion` (none of the
engine's cancellation, timings or overflow policy), and while the Llama is not verbose it redirects
the process's stdout/stderr file descriptors, which blanks a running TUI.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import read_gguf
from runtime.llamacpp import log as llama_log


def check_projector(mmproj: Path, text_embedding: int | None) -> None:
    """One line if `mmproj` is not a vision projector for a model of `text_embedding` width."""
    if not mmproj.is_file():
        raise EdgeAIError(f"vision projector {mmproj} not found; set screen.vision_mmproj to the model's mmproj .gguf")
    info = read_gguf(mmproj)
    architecture = info.metadata.get("general.architecture")
    if architecture != "clip":
        raise EdgeAIError(f"{mmproj.name} is not a vision projector (its architecture is {architecture!r}, not "
                          "'clip'): screen.vision_mmproj takes the mmproj file that comes with a vision model")
    if not info.metadata.get("clip.has_vision_encoder"):
        raise EdgeAIError(f"{mmproj.name} has no vision encoder (an audio projector?); it cannot read the screen")
    width = info.metadata.get("clip.vision.projection_dim")
    if text_embedding and width and width != text_embedding:
        raise EdgeAIError(f"{mmproj.name} projects images to {width} dimensions but the model's embeddings have "
                          f"{text_embedding}: it belongs to another model")


def image_id(pixels: np.ndarray) -> int:
    """The negative id that stands for each position of the image `pixels` in a token list."""
    digest = hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=4,
                             key=repr(pixels.shape).encode()).digest()
    return -1 - int.from_bytes(digest, "little") % (2**31 - 1)


class Images:
    """Tokenized images by id: mtmd chunks this object owns."""

    def __init__(self) -> None:
        self._chunks: dict[int, Any] = {}

    def add(self, key: int, chunk: Any) -> None:
        if key in self._chunks:
            mtmd_cpp.mtmd_input_chunk_free(chunk)  # the same picture tokenized again
        else:
            self._chunks[key] = chunk

    def __getitem__(self, key: int) -> Any:
        return self._chunks[key]

    def close(self) -> None:
        for chunk in self._chunks.values():
            mtmd_cpp.mtmd_input_chunk_free(chunk)
        self._chunks.clear()


class Projector:
    """A vision projector loaded for the model of `llm` (a llama_cpp.Llama); `check_projector` first."""

    def __init__(self, mmproj: Path, llm: Any) -> None:
        llama_log.install()
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = llm.n_threads
        params.warmup = False  # the first image pays for it instead of every load
        mark = llama_log.mark()
        self._ctx = mtmd_cpp.mtmd_init_from_file(str(mmproj).encode(), llm.model, params)
        if not self._ctx:
            reason = "; ".join(llama_log.errors_since(mark)) or "no reason given"
            raise EdgeAIError(f"llama.cpp could not load the projector {mmproj.name}: {reason}")
        if not mtmd_cpp.mtmd_support_vision(self._ctx):
            self.close()
            raise EdgeAIError(f"{mmproj.name} cannot encode images (an audio projector?)")

    def tokenize(self, pieces: Sequence[str | np.ndarray], into: Images) -> list[int]:
        """Text and images (RGB arrays) in order as one token list, each image a run of its id, the
        images' chunks added to `into`. Special tokens in the text are parsed; no BOS is added; the
        text is never searched for mtmd's media marker, so a user who types it gets it as text."""
        images = [piece for piece in pieces if isinstance(piece, np.ndarray)]
        parts, texts, bitmaps = [], [], []  # the parts, and what they point to (kept alive, bitmaps freed)
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            for piece in pieces:
                part = mtmd_cpp.mtmd_input_part()
                if isinstance(piece, str):
                    data = piece.encode("utf-8")
                    texts.append(mtmd_cpp.mtmd_input_text(text=data, text_len=len(data), add_special=False,
                                                          parse_special=True))
                    part.text = ctypes.pointer(texts[-1])
                else:
                    bitmaps.append(self._bitmap(piece))
                    part.bitmap = bitmaps[-1]
                parts.append(ctypes.pointer(part))
            array = (ctypes.POINTER(mtmd_cpp.mtmd_input_part) * len(parts))(*parts)
            mark = llama_log.mark()
            status = mtmd_cpp.mtmd_tokenize_from_parts(self._ctx, chunks, array, len(parts), False)
            if status != 0:
                reason = "; ".join(llama_log.errors_since(mark)) or f"status {status}"
                raise EdgeAIError(f"llama.cpp could not prepare the image for the projector: {reason}")
            return self._tokens(chunks, images, into)
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)

    def _bitmap(self, pixels: np.ndarray) -> Any:
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8 or 0 in pixels.shape:
            raise EdgeAIError(f"an image for the model must be RGB bytes (height, width, 3), not {pixels.dtype} "
                              f"{pixels.shape}")
        rgb = np.ascontiguousarray(pixels)
        bitmap = mtmd_cpp.mtmd_bitmap_init(rgb.shape[1], rgb.shape[0],
                                           rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        if not bitmap:
            raise EdgeAIError(f"llama.cpp could not take a {rgb.shape[1]}x{rgb.shape[0]} image")
        return bitmap

    def _tokens(self, chunks: Any, images: Sequence[np.ndarray], into: Images) -> list[int]:
        tokens: list[int] = []
        pictures = iter(images)
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            kind = mtmd_cpp.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t()
                ids = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                tokens.extend(ids[:count.value])
            elif kind == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                key = image_id(next(pictures))
                n_pos = mtmd_cpp.mtmd_input_chunk_get_n_pos(chunk)
                into.add(key, mtmd_cpp.mtmd_input_chunk_copy(chunk))
                tokens.extend([key] * n_pos)
            else:
                raise EdgeAIError("only images can go to this projector")
        return tokens

    def evaluate(self, chunk: Any, llm: Any, n_past: int) -> int:
        """Encode an image chunk (from `Images`) and decode it into `llm`'s context at `n_past`;
        returns the position after it. The caller has dropped the cache from `n_past` on."""
        new_n_past = llama_cpp.llama_pos(0)
        mark = llama_log.mark()
        status = mtmd_cpp.mtmd_helper_eval_chunk_single(self._ctx, llm.ctx, chunk, n_past, 0, llm.n_batch, False,
                                                         ctypes.byref(new_n_past))
        if status != 0:
            reason = "; ".join(llama_log.errors_since(mark)) or f"status {status}"
            raise EdgeAIError(f"llama.cpp could not encode the image: {reason}")
        return new_n_past.value

    def close(self) -> None:
        if self._ctx:
            mtmd_cpp.mtmd_free(self._ctx)
            self._ctx = None

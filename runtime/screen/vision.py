"""The screen as an image for a vision-language GGUF, through llama.cpp's multimodal library (mtmd).

    vision = VisionModel(model_path, mmproj_path, context=4096)
    for piece in vision.ask(pixels, "What does this error mean?", SamplingParams()):
        print(piece, end="")
    vision.prompt_tokens        # the last prompt's tokens, the image's included
    vision.close()

A vision model is two files: the language model and its projector (`mmproj`, a CLIP-style image
encoder whose output lands in the language model's embedding space). llama-cpp-python's
`MTMDChatHandler` puts the image where the chat template puts its marker, encodes it and decodes
its tokens with the prompt. The projector is checked here first (a GGUF of architecture `clip` with
a vision encoder whose projection width is the model's embedding width): a wrong file would
otherwise surface as an abort inside C or as "failed to load mtmd context". The image is what the
screen capture returned, private windows already blanked, downscaled by the caller. A model whose
file has no chat template (a base model) is prompted as a User:/Assistant: transcript
(runtime.llamacpp.mtmd).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge_ai.errors import EdgeAIError
from edge_ai.gguf_file import check_gguf, read_gguf
from edge_ai.hardware import default_threads
from runtime.llamacpp.load import load_llama
from runtime.llamacpp.mtmd import TRANSCRIPT_STOPS, MtmdHandler
from runtime.llm.events import SamplingParams


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


def png_data_uri(pixels: np.ndarray) -> str:
    """An RGB image as the data URI llama-cpp-python's image loader takes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class VisionModel:
    def __init__(self, model_path: Path, mmproj_path: Path, *, context: int = 4096, threads: int = 0) -> None:
        info = check_gguf(model_path)
        check_projector(mmproj_path, info.embedding_length)
        template = info.chat_template
        self._stops = () if template else TRANSCRIPT_STOPS
        self._handler = MtmdHandler(mmproj_path, template)
        threads = threads or default_threads()
        self._llm = load_llama(model_path, dict(n_ctx=min(context, info.context_length or context),
                                                n_threads=threads, n_threads_batch=threads),
                               info=info, chat_handler=self._handler)
        try:
            self._handler.start(self._llm)
        except BaseException:
            self._llm.close()
            raise
        self.prompt_tokens = 0

    def ask(self, pixels: np.ndarray | None, prompt: str, sampling: SamplingParams,
            system: str | None = None) -> Iterator[str]:
        """Stream the reply to `prompt` about the image `pixels` (None: text alone, the same path)."""
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        if pixels is not None:
            content.insert(0, {"type": "image_url", "image_url": {"url": png_data_uri(pixels)}})
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
        self.prompt_tokens = 0
        stream = self._llm.create_chat_completion(
            messages=messages, stream=True, temperature=sampling.temperature, top_p=sampling.top_p,
            top_k=sampling.top_k, min_p=sampling.min_p, repeat_penalty=sampling.repeat_penalty,
            seed=sampling.seed if sampling.seed >= 0 else None, max_tokens=sampling.max_tokens,
            stop=[*sampling.stop, *self._stops])
        for chunk in stream:
            # the first chunk comes once the prompt is decoded and before the first token is: the context
            # then holds the prompt alone
            self.prompt_tokens = self.prompt_tokens or self._llm.n_tokens
            if piece := chunk["choices"][0]["delta"].get("content"):
                yield piece

    def close(self) -> None:
        self._llm.close()

"""A vision model sees the screen: the real default model with a tiny random Gemma 3 projector
(tiny_mmproj) through llama.cpp's multimodal library, and the bad projector files a user may give."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from test_screen_cli import edge_ai
from tiny_mmproj import write_tiny_mmproj
from xserver import words

from edge_ai.errors import EdgeAIError
from runtime.llm.events import SamplingParams
from runtime.screen.vision import VisionModel

pytestmark = pytest.mark.slow

IMAGE_TOKENS = 4  # tiny_mmproj: 4x4 patches pooled 2x2


@pytest.fixture(scope="module")
def mmproj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mmproj(tmp_path_factory.mktemp("vision") / "tiny-mmproj.gguf")


def test_the_image_is_encoded_into_the_prompt(model_path, mmproj):
    vision = VisionModel(model_path, mmproj, context=1024)
    try:
        sampling = SamplingParams(temperature=0.0, max_tokens=4)
        screen = np.full((300, 500, 3), 240, np.uint8)
        list(vision.ask(screen, "What is on the screen?", sampling))
        with_image = vision.prompt_tokens
        list(vision.ask(None, "What is on the screen?", sampling))
        assert with_image >= vision.prompt_tokens + IMAGE_TOKENS
    finally:
        vision.close()


def test_screen_ask_with_a_projector_answers_from_the_screen(display, xterm, registered_model, mmproj):
    xterm("notes", "The secret fruit is pineapple.", geometry="40x3+0+0")
    xterm("Bitwarden", "The vault fruit is kumquat.", geometry="40x3+0+200")
    env = dict(os.environ, EDGE_AI_SCREEN_VISION_MMPROJ=str(mmproj))
    result = edge_ai("screen", "ask", "What is the secret fruit?", "--temperature", "0", "--max-tokens", "32", env=env)
    assert result.returncode == 0, result.stderr
    assert "pineapple" in words(result.stdout), result.stdout
    assert "kumquat" not in result.stdout.lower() and result.stderr == ""


def test_projector_files_that_do_not_fit_are_one_line_errors(model_path, tmp_path):
    with pytest.raises(EdgeAIError, match="not found"):
        VisionModel(model_path, tmp_path / "missing.gguf")
    with pytest.raises(EdgeAIError, match="is not a vision projector .*architecture is 'gemma3'"):
        VisionModel(model_path, model_path)
    other = write_tiny_mmproj(tmp_path / "for-another-model.gguf", text_embd=320)
    with pytest.raises(EdgeAIError, match="projects images to 320 dimensions but the model's embeddings have 640"):
        VisionModel(model_path, other)


def test_screen_ask_with_a_missing_projector_says_which_setting(display, registered_model, tmp_path):
    env = dict(os.environ, EDGE_AI_SCREEN_VISION_MMPROJ=str(tmp_path / "nope.gguf"))
    result = edge_ai("screen", "ask", "What is here?", env=env)
    assert result.returncode == 1
    assert "screen.vision_mmproj" in result.stderr and len(result.stderr.strip().splitlines()) == 1

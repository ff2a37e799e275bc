"""A vision model sees the screen: the real default model with a tiny random Gemma 3 projector
(tiny_mmproj) through llama.cpp's multimodal library in our engine, and the bad projector files a
user may give."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from test_screen_cli import edge_ai
from tiny_mmproj import write_tiny_mmproj
from xserver import words

from edge_ai.errors import EdgeAIError
from runtime.llm.engine import Engine, EngineOptions
from runtime.llm.events import DoneEvent, SamplingParams

pytestmark = pytest.mark.slow

IMAGE_TOKENS = 4  # tiny_mmproj: 4x4 patches pooled 2x2
GREEDY = SamplingParams(temperature=0.0, max_tokens=4)


@pytest.fixture(scope="module")
def vision(model_path, mmproj):
    engine = Engine(model_path, options=EngineOptions(context=1024, mmproj=str(mmproj)))
    yield engine
    engine.close()


def reply(engine: Engine, messages: list[dict]) -> DoneEvent:
    *_, done = engine.chat(messages, GREEDY)
    assert isinstance(done, DoneEvent)
    return done


def screen(shade: int) -> np.ndarray:
    return np.full((300, 500, 3), shade, np.uint8)


def test_the_image_is_encoded_into_the_prompt_and_served_from_the_cache_after(vision):
    question = {"role": "user", "content": "What is on the screen?"}
    text_only = reply(vision, [question]).metrics.prompt_tokens
    first = reply(vision, [{**question, "image": screen(240)}])
    assert vision.sees_images and first.metrics.prompt_tokens >= text_only + IMAGE_TOKENS
    follow_up = [{**question, "image": screen(240)}, {"role": "assistant", "content": first.text},
                 {"role": "user", "content": "And the colour?"}]
    second = reply(vision, follow_up).metrics
    assert second.cached_tokens >= first.metrics.prompt_tokens - 1  # the image is not encoded again
    other = reply(vision, [{**question, "image": screen(20)}]).metrics
    assert other.cached_tokens < other.prompt_tokens - IMAGE_TOKENS  # a new picture is


def test_a_cancelled_image_prefill_leaves_a_usable_engine(vision):
    stop = __import__("threading").Event()
    stop.set()
    *_, done = vision.chat([{"role": "user", "content": "Describe it.", "image": screen(128)}], GREEDY, stop=stop)
    assert done.reason == "cancelled"
    assert reply(vision, [{"role": "user", "content": "Describe it.", "image": screen(128)}]).reason in ("stop", "length")


def test_an_image_for_a_model_without_a_projector_is_one_line(model_path):
    engine = Engine(model_path, options=EngineOptions(context=512))
    try:
        with pytest.raises(EdgeAIError, match="without a vision projector.*screen.vision_mmproj"):
            reply(engine, [{"role": "user", "content": "What is this?", "image": screen(0)}])
        assert not engine.sees_images
    finally:
        engine.close()


def test_mtmds_media_marker_typed_by_the_user_is_text(vision):
    message = {"role": "user", "content": "What is <__media__> here?", "image": screen(200)}
    tokens = vision.encode([message])
    assert sum(t < 0 for t in tokens) == IMAGE_TOKENS and "<__media__>" in vision.render([message])
    assert reply(vision, [message]).reason in ("stop", "length")


def test_screen_ask_with_a_projector_answers_from_the_screen(display, xterm, registered_model, mmproj):
    xterm("notes", "The secret fruit is pineapple.", geometry="40x3+0+0")
    xterm("Bitwarden", "The vault fruit is kumquat.", geometry="40x3+0+200")
    env = dict(os.environ, EDGE_AI_SCREEN_VISION_MMPROJ=str(mmproj))
    result = edge_ai("screen", "ask", "What is the secret fruit?", "--temperature", "0", "--max-tokens", "32", env=env)
    assert result.returncode == 0, result.stderr
    assert "pineapple" in words(result.stdout), result.stdout
    assert "kumquat" not in result.stdout.lower() and result.stderr == ""


def test_projector_files_that_do_not_fit_are_one_line_errors(model_path, tmp_path):
    def load(mmproj: Path) -> None:
        Engine(model_path, options=EngineOptions(context=512, mmproj=str(mmproj))).close()

    with pytest.raises(EdgeAIError, match="not found"):
        load(tmp_path / "missing.gguf")
    with pytest.raises(EdgeAIError, match="is not a vision projector .*architecture is 'gemma3'"):
        load(model_path)
    other = write_tiny_mmproj(tmp_path / "for-another-model.gguf", text_embd=320)
    with pytest.raises(EdgeAIError, match="projects images to 320 dimensions but the model's embeddings have 640"):
        load(other)


def test_screen_ask_with_a_missing_projector_says_which_setting(display, registered_model, tmp_path):
    env = dict(os.environ, EDGE_AI_SCREEN_VISION_MMPROJ=str(tmp_path / "nope.gguf"))
    result = edge_ai("screen", "ask", "What is here?", env=env)
    assert result.returncode == 1
    assert "screen.vision_mmproj" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _png_data_url(pixels: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_an_openai_client_sends_an_image_to_the_server(vision):
    """The server gives a user message's image (a base64 data URL) to a model that can see; what it cannot
    read is a 400 naming the part."""
    import openai
    from fastapi.testclient import TestClient

    from edge_ai.config import Config
    from runtime.server import create_app

    app = create_app(Config().with_values({"sampling.max_tokens": 4, "sampling.temperature": 0}), vision)
    with TestClient(app) as http, openai.OpenAI(base_url="http://testserver/v1", api_key="unused",
                                                http_client=http, max_retries=0) as client:
        def ask(*image_urls: str):
            content = [{"type": "text", "text": "What is on the screen?"},
                       *({"type": "image_url", "image_url": {"url": url}} for url in image_urls)]
            return client.chat.completions.create(model=vision.name, messages=[{"role": "user", "content": content}])

        text_only = ask().usage.prompt_tokens
        assert ask(_png_data_url(screen(90))).usage.prompt_tokens >= text_only + IMAGE_TOKENS
        for urls, says in [(("https://example.com/a.png",), "offline"), (("data:image/png;base64,AAAA",), "not an image"),
                           (("data:image/png;base64,@@@",), "base64"),
                           ((_png_data_url(screen(1)), _png_data_url(screen(2))), "one per message")]:
            with pytest.raises(openai.BadRequestError) as caught:
                ask(*urls)
            assert says in caught.value.body["message"] and caught.value.body["param"].startswith("messages[0]")

"""Images handed over by the user: read as RGB, refused in one line when they are not images or too large."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.screen.image_file import MAX_PIXELS, UnreadableImage, read_rgb


def _png(pixels: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_rgba_png_and_a_greyscale_jpeg_are_read_as_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((3, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    assert read_rgb(io.BytesIO(_png(rgba, "RGBA")))[1, 2].tolist() == [200, 0, 0]
    grey = tmp_path / "grey.jpg"
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8), "L").save(grey)
    pixels = read_rgb(grey)
    assert pixels.shape == (8, 8, 3) and abs(int(pixels[4, 4, 0]) - 128) <= 2


@pytest.mark.parametrize("width, height", [(9000, 9000), (40_000, 40_000)])  # over our bound; over Pillow's too
def test_an_image_declaring_more_pixels_than_the_bound_is_refused_from_its_header(width: int, height: int) -> None:
    data = bytearray(_png(np.zeros((2, 2, 3), dtype=np.uint8), "RGB"))
    # IHDR is the first chunk: length (4), type (4), width, height, ... then the CRC of type + data
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    assert width * height > MAX_PIXELS
    with pytest.raises(UnreadableImage, match=r"more than [\d,]+ pixels; crop or scale it first"):
        read_rgb(io.BytesIO(bytes(data)))


@pytest.mark.parametrize("data", [b"not an image at all", b"", "truncated"])
def test_bytes_that_are_not_a_whole_image_are_one_clear_error(data: bytes | str) -> None:
    if data == "truncated":
        noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        data = _png(noise, "RGB")[:-200]
    with pytest.raises(UnreadableImage, match="not an image Pillow can read"):
        read_rgb(io.BytesIO(data))


def test_a_missing_file_is_left_to_the_caller_to_name() -> None:
    with pytest.raises(FileNotFoundError):
        read_rgb(Path("/nonexistent/picture.png"))

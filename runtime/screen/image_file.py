"""An image handed over by the user (a file, the bytes of a data URL) as RGB pixels.

    try:
        pixels = read_rgb(path_or_binary_file)      # [height, width, 3] uint8
    except UnreadableImage as exc:                  # str(exc): why, fit for a one-line error
        ...

The size is read from the header and checked before any pixel is decoded, so a small file that
declares a huge image (a decompression bomb) costs nothing. `edge-ai screen ocr --image` and the
server's image messages both read images here, with the same bound as a screen capture.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

MAX_PIXELS = 2 * 7680 * 4320  # two 8K monitors (~200 MB of RGB): the largest capture, and the largest image read


class UnreadableImage(ValueError):
    """The data is not an image this can read, or too large a one."""


def read_rgb(source: Path | BinaryIO) -> np.ndarray:
    """The pixels of a PNG, JPEG, WebP, GIF... (anything Pillow reads), converted to RGB."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UnreadableImage("reading images needs Pillow; install the screen extra: "
                              "pip install 'edge-ai[screen]'") from None
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height <= MAX_PIXELS:
                return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError:  # Pillow's own bound, far above this one, refused it on opening
        raise UnreadableImage(f"the image declares more than {MAX_PIXELS:,} pixels; crop or scale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UnreadableImage("not an image Pillow can read (give a PNG, JPEG, WebP or GIF)") from None
    raise UnreadableImage(f"the image is {width}x{height}, more than {MAX_PIXELS:,} pixels; crop or scale it first")

"""Has the screen changed since the last look? A difference hash per tile of a downscaled grey frame.

A difference hash (dHash) keeps, for each pixel of a small grey image, whether its right-hand
neighbour is brighter. Classic dHash shrinks the whole image to 9x8 first; on a 1280x800 screen
one line of changed text moves the average of a 142x100 block by a fraction of a grey level and no
bit flips, so the changed line is missed. Here the grey frame is only subsampled (every `step`
pixels, 640x400 for a 1280x800 screen at step 2) and each tile of `tile` x `tile` samples keeps its
own bits: a changed character flips dozens of bits in its tile, while a uniform brightness shift
(a dimmed screen, a gamma change) flips none, since the hash keeps only the sign of each gradient.

An unchanged frame costs one subsampled copy, one comparison and one equality test of the bits.

    detector = ChangeDetector()
    change = detector.check(frame.pixels)       # the first frame is always a change
    change.changed, change.tiles                # tiles: Rects in frame pixels that changed
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runtime.screen.windows import Rect


@dataclass(frozen=True)
class ChangeOptions:
    step: int = 2  # subsample every `step` pixels in x and y before hashing (1 = full resolution)
    tile: int = 32  # tile side in samples (64 screen pixels at step 2): changes are reported per tile
    min_bits: int = 2  # a tile changed when more than this many of its hash bits differ (1 bit: a flicker)


@dataclass(frozen=True)
class Change:
    changed: bool
    tiles: list[Rect] = field(default_factory=list)  # the changed tiles, in the frame's pixels
    bits: int = 0  # hash bits that differ in total


def grey_samples(pixels: np.ndarray, step: int) -> np.ndarray:
    """A subsampled grey image (green channel: closest to luma, and no arithmetic over a large frame)."""
    if pixels.ndim == 2:
        return pixels[::step, ::step]
    return pixels[::step, ::step, 1]


def dhash_bits(grey: np.ndarray) -> np.ndarray:
    """[h, w-1] bools: is each sample's right-hand neighbour brighter."""
    return grey[:, 1:] > grey[:, :-1]


class ChangeDetector:
    """Remembers the last frame's hash bits; `check` says whether (and where) a new frame differs."""

    def __init__(self, options: ChangeOptions | None = None) -> None:
        self.options = options or ChangeOptions()
        self._bits: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the last frame: the next check reports a change."""
        self._bits = None

    def check(self, pixels: np.ndarray) -> Change:
        """Compare a frame ([H, W, 3] RGB or an [H, W] grey image) with the previous one checked."""
        bits = dhash_bits(grey_samples(pixels, self.options.step))
        previous = self._bits
        if previous is None or previous.shape != bits.shape:
            self._bits = bits
            h, w = pixels.shape[:2]
            return Change(True, [Rect(0, 0, w, h)], int(bits.size))
        if np.array_equal(previous, bits):
            return Change(False)
        change = self._changed_tiles(previous != bits, pixels.shape[:2])
        if change.changed:  # below the noise floor the old reference stays, so a slow drift adds up to a change
            self._bits = bits
        return change

    def _changed_tiles(self, diff: np.ndarray, shape: tuple[int, ...]) -> Change:
        """Group the differing bits into tiles and keep the tiles over the noise floor."""
        tile, step = self.options.tile, self.options.step
        rows, cols = -(-diff.shape[0] // tile), -(-diff.shape[1] // tile)
        padded = np.zeros((rows * tile, cols * tile), dtype=np.int32)
        padded[:diff.shape[0], :diff.shape[1]] = diff
        counts = padded.reshape(rows, tile, cols, tile).sum(axis=(1, 3))
        height, width = shape[0], shape[1]
        side = tile * step
        tiles = [Rect(c * side, r * side, min(side, width - c * side), min(side, height - r * side))
                 for r, c in zip(*np.nonzero(counts > self.options.min_bits))]
        return Change(bool(tiles), tiles, int(counts.sum()))

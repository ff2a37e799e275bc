"""OCR of a (masked) frame with rapidocr's packaged PP-OCR ONNX models, read in a sensible order.

    ocr = ScreenOCR()                        # models load on first use (~2 s), then stay
    result = ocr.read(frame.pixels)          # RGB [H, W, 3]
    for line in result.lines: line.text, line.box, line.confidence
    result.as_text(budget_tokens=1500)       # what a model gets as the screen's text

rapidocr returns text boxes in detection order, with a line of text often split in several boxes.
Reading order is rebuilt with a recursive XY-cut (the classic layout-analysis cut): a set of boxes
is split at its widest empty gap, a band of empty rows at least `ROW_GAP` text heights tall (top to
bottom) or a column gutter at least `COLUMN_GAP` text heights wide (left to right), and each part is
cut again; what cannot be cut is one block, whose boxes are joined into lines by their vertical centres. So two side-by-side
windows or a two-column page are read one column after the other, not line by line across.

Memory: the detector's activations grow with the area it sees, and a whole 1280x800 frame (scaled to
736 px on its short side, rapidocr's default) peaked at ~400 MB over the models. So the frame is
read in horizontal bands of BAND_ROWS rows at their own resolution, overlapping by BAND_OVERLAP
rows: a line shorter than the overlap lies whole in at least one band. A box touching a band's cut
edge is dropped (the line goes on in the next band), and a box from a band that covers most of one
kept from the band above is the same text seen twice. (Splitting ownership at the overlap's middle
lost lines lying across it: each band's box put its centre on the other side.) A frame wider than
MAX_SIDE is scaled down to it first: the detector found nothing at all in bands wider than ~3400 px
(a 4K screen's), while at 2560 it reads 24 px text, a 4K laptop's at 150 % scaling. And glibc's
malloc is told to map big blocks separately (`_return_big_blocks`): onnxruntime frees its per-run
buffers, but by default glibc keeps big freed blocks in its heaps, so resident memory only grew from
read to read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_ai.errors import EdgeAIError
from runtime.screen.windows import Rect

COLUMN_GAP = 2.0  # a vertical gutter splits columns when at least this many text heights wide
ROW_GAP = 1.0  # a horizontal band splits blocks when at least one empty text line tall
MAX_SIDE = 2560  # widest image read; a wider one is scaled down to it (see the module docstring)
BAND_ROWS = 432  # rows the detector sees at once (see the module docstring)
BAND_OVERLAP = 64  # rows neighbouring bands share: text lines up to this tall are read whole
EDGE_ROWS = 2  # a box this close to a band's cut edge may be a cut line
MMAP_THRESHOLD = 128 << 10  # bytes from which glibc's malloc maps a block on its own (returned when freed)
CHARS_PER_TOKEN = 4  # the budget estimate when no tokenizer is given (English text: ~4 characters a token)


@dataclass(frozen=True)
class OcrBox:
    """One box of text as the recogniser read it."""

    text: str
    box: Rect
    confidence: float


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: Rect
    confidence: float  # the lowest of its boxes
    block: int  # index of the column/block it belongs to, in reading order


@dataclass(frozen=True)
class OcrResult:
    lines: list[OcrLine]

    @property
    def text(self) -> str:
        return self.as_text()

    def as_text(self, budget_tokens: int | None = None, count_tokens: Callable[[str], int] | None = None) -> str:
        """The lines in reading order, a blank line between blocks, cut to fit `budget_tokens`.

        Whole lines are kept while they fit; what is left out is said in a last line, so a model
        knows the screen held more. `count_tokens` is the model's tokenizer when the caller has one.
        """
        count = count_tokens or (lambda s: -(-len(s) // CHARS_PER_TOKEN))
        parts: list[str] = []
        used = 0
        for i, line in enumerate(self.lines):
            piece = line.text if i == 0 else ("\n\n" if line.block != self.lines[i - 1].block else "\n") + line.text
            cost = count(piece)
            if budget_tokens is not None and used + cost > budget_tokens:
                parts.append(f"\n[... {len(self.lines) - i} more lines of screen text not shown]")
                break
            parts.append(piece)
            used += cost
        return "".join(parts)


class ScreenOCR:
    """rapidocr with its packaged models (offline), loaded once and shared by threads one call at a time."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._engine is None:
            try:
                from rapidocr import RapidOCR
            except ImportError as exc:
                raise EdgeAIError("OCR needs rapidocr; install the screen extra: pip install 'edge-ai[screen]'") from exc
            threads = self.threads if self.threads > 0 else -1
            _return_big_blocks()
            self._engine = RapidOCR(params={
                "Global.log_level": "error", "Global.max_side_len": MAX_SIDE,
                # the detector reads a band at its own resolution (by default rapidocr scales the short
                # side to 736 px: a short band, or a wide short frame, would be blown up several times)
                "Det.limit_type": "max", "Det.limit_side_len": MAX_SIDE,
                # padding an image wider than 8:1 (a band of a 4K screen) to a taller one made the detector
                # find nothing in it
                "Global.use_vertical_padding": False,
                # screen text is upright: the 180-degree angle classifier only adds cost and, on a terminal
                # line ("user@laptop:~/project$ python3 train.py --epochs 3"), flipped it into "u s- h"
                "Global.use_cls": False,
                # one line per recognizer call: a batch is padded to its widest line, and on a full
                # 1280x800 terminal screen the default batch of 6 peaked at 887 MB RSS in 3.7 s, one
                # at a time at 498 MB in 3.1 s, with the same words read (benchmarks/bench_screen.py)
                "Rec.rec_batch_num": 1,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            })
        return self._engine

    def read(self, pixels: np.ndarray) -> OcrResult:
        """OCR an RGB [H, W, 3] (or grey [H, W]) image."""
        import cv2

        if pixels.ndim == 2:
            bgr = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
        else:
            bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)  # rapidocr works in OpenCV's BGR
        scale = min(1.0, MAX_SIDE / bgr.shape[1])
        if scale < 1.0:
            bgr = cv2.resize(bgr, (MAX_SIDE, max(1, round(bgr.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        rows = bgr.shape[0]
        kept: list[OcrBox] = []  # in the (scaled) frame's pixels
        with self._lock:
            engine = self._load()
            for top, bottom in row_bands(rows):
                out = engine(bgr[top:bottom])
                if out.boxes is None or out.txts is None:
                    continue
                above = [box for box in kept if box.box.y + box.box.height > top]
                for points, text, score in zip(out.boxes, out.txts, out.scores):
                    box = OcrBox(text.strip(), _rect(np.asarray(points, dtype=float) + (0, top)), float(score))
                    cut = (top > 0 and box.box.y <= top + EDGE_ROWS
                           or bottom < rows and box.box.y + box.box.height >= bottom - EDGE_ROWS)
                    if box.text and not cut and not any(_mostly_covers(box.box, old.box) for old in above):
                        kept.append(box)
        if scale < 1.0:  # back to the caller's pixels
            kept = [OcrBox(b.text, Rect(round(b.box.x / scale), round(b.box.y / scale), max(1, round(b.box.width / scale)),
                                        max(1, round(b.box.height / scale))), b.confidence) for b in kept]
        return OcrResult(reading_order(kept))


def row_bands(rows: int) -> list[tuple[int, int]]:
    """(top, bottom) row ranges of the bands a frame `rows` tall is read in: BAND_ROWS each, evenly
    spread, neighbours sharing at least BAND_OVERLAP rows; one band when the frame is short."""
    if rows <= BAND_ROWS + BAND_OVERLAP:
        return [(0, rows)]
    count = math.ceil((rows - BAND_OVERLAP) / (BAND_ROWS - BAND_OVERLAP))
    stride = (rows - BAND_ROWS) / (count - 1)
    return [(round(i * stride), round(i * stride) + BAND_ROWS) for i in range(count)]


def _mostly_covers(a: Rect, b: Rect) -> bool:
    """Whether `a` and `b` share at least half of the smaller one's area (one text read twice)."""
    both = a.clip(b)
    return both is not None and both.width * both.height >= 0.5 * min(a.width * a.height, b.width * b.height)


def _return_big_blocks() -> None:
    """Have glibc's malloc map blocks of MMAP_THRESHOLD bytes or more on their own, so memory
    onnxruntime frees after a run goes back to the system (no-op off glibc).

    Measured on a 1280x800 terminal screen, three reads: peak RSS ~480-520 MB by default, ~345 MB
    with this alone. It applies to the whole process (mallopt has no narrower scope); big blocks then
    cost a mapping each, which a read of the screen does not notice.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return
    m_mmap_threshold = -3  # malloc.h
    mallopt(m_mmap_threshold, MMAP_THRESHOLD)


def _rect(points: Any) -> Rect:
    pts = np.asarray(points, dtype=float)
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
    return Rect(int(x0), int(y0), max(1, int(x1 - x0)), max(1, int(y1 - y0)))


def reading_order(boxes: Sequence[OcrBox]) -> list[OcrLine]:
    """Lines in reading order: blocks from the XY-cut, lines within a block top to bottom."""
    if not boxes:
        return []
    height = float(np.median([b.box.height for b in boxes]))
    lines: list[OcrLine] = []
    for block, members in enumerate(_xy_cut(list(boxes), height)):
        lines.extend(_lines(members, height, block))
    return lines


def _xy_cut(boxes: list[OcrBox], height: float) -> list[list[OcrBox]]:
    """Split at the widest gap (rows: ROW_GAP heights; columns: COLUMN_GAP heights), recursively."""
    if len(boxes) <= 1:
        return [boxes]
    rows = _gaps([(b.box.y, b.box.y + b.box.height) for b in boxes])
    cols = _gaps([(b.box.x, b.box.x + b.box.width) for b in boxes])
    row = max(rows, key=lambda g: g[1] - g[0], default=None)
    col = max(cols, key=lambda g: g[1] - g[0], default=None)
    row_size = (row[1] - row[0]) / ROW_GAP if row else 0.0  # gaps in units of their own threshold
    col_size = (col[1] - col[0]) / COLUMN_GAP if col else 0.0
    if max(row_size, col_size) < height:
        return [boxes]
    if col_size >= row_size:
        cut = col[0]  # type: ignore[index]
        parts = ([b for b in boxes if b.box.x < cut], [b for b in boxes if b.box.x >= cut])
    else:
        cut = row[0]  # type: ignore[index]
        parts = ([b for b in boxes if b.box.y < cut], [b for b in boxes if b.box.y >= cut])
    return _xy_cut(parts[0], height) + _xy_cut(parts[1], height)


def _gaps(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The empty intervals between the union of `spans` (start, end)."""
    gaps = []
    spans = sorted(spans)
    reach = spans[0][1]
    for start, end in spans[1:]:
        if start > reach:
            gaps.append((reach, start))
        reach = max(reach, end)
    return gaps


def _lines(boxes: list[OcrBox], height: float, block: int) -> list[OcrLine]:
    """Boxes whose vertical centres lie within half a text height of a line's are that line, read left to right."""
    groups: list[list[OcrBox]] = []
    for box in sorted(boxes, key=lambda b: b.box.y + b.box.height / 2):
        centre = box.box.y + box.box.height / 2
        if groups:
            last = groups[-1]
            line_centre = sum(b.box.y + b.box.height / 2 for b in last) / len(last)
            if abs(centre - line_centre) <= height / 2:
                last.append(box)
                continue
        groups.append([box])
    lines = []
    for group in groups:
        group.sort(key=lambda b: b.box.x)
        x0, y0 = min(b.box.x for b in group), min(b.box.y for b in group)
        x1 = max(b.box.x + b.box.width for b in group)
        y1 = max(b.box.y + b.box.height for b in group)
        lines.append(OcrLine(" ".join(b.text for b in group), Rect(x0, y0, x1 - x0, y1 - y0),
                             min(b.confidence for b in group), block))
    return lines

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
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_ai.errors import EdgeAIError
from runtime.screen.windows import Rect

COLUMN_GAP = 2.0  # a vertical gutter splits columns when at least this many text heights wide
ROW_GAP = 1.0  # a horizontal band splits blocks when at least one empty text line tall
MAX_SIDE = 4096  # longest side rapidocr works on; a larger image is scaled down to it (bounded work on 8K)
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
            self._engine = RapidOCR(params={
                "Global.log_level": "error", "Global.max_side_len": MAX_SIDE,
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
        with self._lock:
            out = self._load()(bgr)
        if out.boxes is None or out.txts is None:
            return OcrResult([])
        boxes = [OcrBox(text.strip(), _rect(points), float(score))
                 for points, text, score in zip(out.boxes, out.txts, out.scores) if text.strip()]
        return OcrResult(reading_order(boxes))


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

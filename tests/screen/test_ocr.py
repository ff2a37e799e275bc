"""OCR of real windows on Xvfb: terminal text, a rendered page, an excluded window, reading order."""

from __future__ import annotations

import numpy as np
import pytest
from xserver import DOCUMENT_TEXT, TERMINAL_TEXT, render_page, show_image, word_accuracy, words

from runtime.screen.capture import ScreenCapture
from runtime.screen.ocr import OcrBox, ScreenOCR, reading_order
from runtime.screen.windows import Rect


@pytest.fixture(scope="module")
def ocr() -> ScreenOCR:
    return ScreenOCR()


def test_terminal_text_is_read_with_at_least_95_percent_word_accuracy(display, xterm, ocr):
    xterm("shell", TERMINAL_TEXT, geometry="100x20+0+0")
    with ScreenCapture() as cap:
        result = ocr.read(cap.grab().pixels)
    accuracy = word_accuracy(TERMINAL_TEXT, result.text)
    assert accuracy >= 0.95, result.text
    assert all(0.0 < line.confidence <= 1.0 for line in result.lines)
    assert [line.box.y for line in result.lines] == sorted(line.box.y for line in result.lines)


def test_a_rendered_page_is_read_with_at_least_95_percent_word_accuracy(display, ocr):
    conn = show_image(display, render_page(DOCUMENT_TEXT), 20, 20, "report.pdf - Document Viewer")
    try:
        with ScreenCapture() as cap:
            result = ocr.read(cap.grab().pixels)
    finally:
        conn.close()
    assert word_accuracy(DOCUMENT_TEXT, result.text) >= 0.95, result.text


def test_an_excluded_window_never_reaches_ocr_while_the_window_over_it_does(display, xterm, ocr):
    xterm("Passwords.kdbx - KeePassXC", "bank login: zqxjvault 4111111111111111\n" * 8, geometry="70x10+0+0")
    xterm("notes", "meeting notes: buy oranges", geometry="40x3+200+60")  # overlaps the password manager
    with ScreenCapture() as cap:
        frame = cap.grab()
    text = ocr.read(frame.pixels).text
    assert "zqxjvault" not in text.lower() and "4111" not in text
    assert "oranges" in words(text)
    assert frame.masked_pixels > 0


def test_side_by_side_windows_are_read_column_by_column(display, xterm, ocr):
    left = "\n".join(f"left {fruit}" for fruit in ("apples", "cherries", "grapes", "lemons", "mangoes"))
    right = "\n".join(f"right {fruit}" for fruit in ("pears", "plums", "melons", "oranges", "peaches"))
    xterm("left", left, geometry="30x6+0+0")
    xterm("right", right, geometry="30x6+600+0")
    with ScreenCapture() as cap:
        result = ocr.read(cap.grab().pixels)
    got = words(result.text)
    assert got[:10] == words(left), result.text
    assert got[10:20] == words(right), result.text
    assert result.lines[0].block != result.lines[-1].block


def test_reading_order_joins_split_boxes_into_lines_and_budget_cuts_whole_lines():
    def box(text: str, x: int, y: int, w: int = 80) -> OcrBox:
        return OcrBox(text, Rect(x, y, w, 20), 0.9)

    boxes = [box("world", 100, 12), box("second", 0, 40), box("hello", 0, 10), box("line", 90, 41)]
    result_lines = reading_order(boxes)
    assert [line.text for line in result_lines] == ["hello world", "second line"]
    from runtime.screen.ocr import OcrResult

    result = OcrResult(result_lines)
    assert result.as_text() == "hello world\nsecond line"
    assert result.as_text(budget_tokens=3) == "hello world\n[... 1 more lines of screen text not shown]"
    assert result.as_text(budget_tokens=100, count_tokens=lambda s: len(s.split())) == "hello world\nsecond line"


def _lines_image(width: int, height: int, tops: list[int], size: int = 16) -> tuple[np.ndarray, list[str]]:
    """A white image with one numbered line of text at each of `tops` (rows), and the lines."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", size)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    names = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel", "iris", "juniper"]
    lines = [f"line {names[i % len(names)]} number {i} at row {top}" for i, top in enumerate(tops)]
    for line, top in zip(lines, tops):
        draw.text((40, top), line, fill="black", font=font)
    return np.asarray(image), lines


def test_lines_across_and_inside_the_band_overlaps_are_read_once(ocr):
    """The frame is read in overlapping bands: every line, wherever it falls (across a band's edge, in
    the overlap, centred on its middle), is read exactly once and in order."""
    from runtime.screen.ocr import row_bands

    rows = 800
    bands = row_bands(rows)
    assert len(bands) > 1 and bands[0][0] == 0 and bands[-1][1] == rows
    overlap_top, overlap_bottom = bands[1][0], bands[0][1]
    middle = (overlap_top + overlap_bottom) // 2
    tops = [10, 100, overlap_top - 10, middle - 9, overlap_bottom - 8, overlap_bottom + 30, 600, 760]
    pixels, lines = _lines_image(1280, rows, tops)
    got = [line.text for line in ocr.read(pixels).lines]
    assert words("\n".join(got)) == words("\n".join(lines)), got


def test_a_frame_wider_than_the_ocr_limit_is_read_with_boxes_in_its_own_pixels(ocr):
    from runtime.screen.ocr import MAX_SIDE

    pixels, lines = _lines_image(MAX_SIDE * 2, 300, [100], size=48)
    result = ocr.read(pixels)
    assert words(result.text) == words(lines[0]), result.text
    box = result.lines[0].box
    assert 20 <= box.x <= 60 and 80 <= box.y <= 120 and box.width > 600  # the frame's pixels (scaled: ~380 wide)


def test_row_bands_cover_the_frame_with_overlaps():
    from runtime.screen.ocr import BAND_OVERLAP, BAND_ROWS, row_bands

    assert row_bands(300) == [(0, 300)]
    for rows in (BAND_ROWS + BAND_OVERLAP + 1, 800, 1080, 2160, 4320):
        bands = row_bands(rows)
        assert bands[0][0] == 0 and bands[-1][1] == rows
        assert all(bottom - top == BAND_ROWS for top, bottom in bands)
        assert all(b[0] <= a[1] - BAND_OVERLAP for a, b in zip(bands, bands[1:]))


def test_a_4k_screen_is_read_band_by_band(ocr):
    """Scaled to MAX_SIDE wide first (the detector finds nothing in bands ~3400 px wide); 24 px text, as a
    4K laptop at 150 % scaling shows it."""
    tops = [50, 400, 1000, 1500, 2100]
    pixels, lines = _lines_image(3840, 2160, tops, size=24)
    assert words(ocr.read(pixels).text) == words("\n".join(lines))

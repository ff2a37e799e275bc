"""OCR of real windows on Xvfb: terminal text, a rendered page, an excluded window, reading order."""

from __future__ import annotations

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

"""Audio fixtures: a real PulseAudio null sink as the default speaker and microphone (its monitor)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pulse import NullSink, ensure_pulse


@pytest.fixture(scope="session")
def room() -> Iterator[NullSink]:
    """The default devices: a null sink whose monitor is the microphone, so what is played is heard back."""
    ensure_pulse()
    sink = NullSink("vsink")
    sink.make_default()
    yield sink
    sink.close()

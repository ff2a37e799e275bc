"""The model picker shows the memory planner's verdict next to each model whose file is here."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui import SIZE, make_app, wait_for, wait_ready

pytestmark = pytest.mark.slow


async def test_model_picker_shows_how_each_model_fits(registered_model: Path) -> None:
    from textual.widgets import OptionList

    from tui.screens.model_picker import ModelPickerScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_ready(pilot)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen), "the model picker")
        picker = app.screen
        await wait_for(pilot, lambda: "gemma3-270m" in picker.fits, "the planner's verdict")
        assert picker.fits["gemma3-270m"].startswith("fits (context 1024, f16 KV cache")
        prompt = str(picker.query_one(OptionList).get_option("gemma3-270m").prompt)
        assert "gemma3-270m" in prompt and "fits (context 1024" in prompt
        await pilot.press("escape")

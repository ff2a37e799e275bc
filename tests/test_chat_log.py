"""The chat log's message views, in a bare Textual app: a view is in the log (and found by queries) before
Textual composes it; reading its text or footer then must not fail (the voice test once caught a
user message between the two and the app went down)."""

from __future__ import annotations

from textual.app import App

from tui.widgets.chat_log import ChatLog, MessageView, describe_metrics


class LogApp(App):
    def compose(self):
        yield ChatLog()


async def test_a_view_reads_its_text_and_takes_a_footer_before_textual_builds_it() -> None:
    app = LogApp()
    async with app.run_test() as pilot:
        log = app.query_one(ChatLog)
        view = MessageView("user", "What is the **capital** of France?")
        waiting = log.mount(view)  # in the log now, composed later
        assert log.views() == [view]
        assert view.text == "What is the **capital** of France?"
        view.set_footer("spoken")
        await waiting
        await pilot.pause()
        assert view.text == "What is the **capital** of France?"
        assert view.footer == "spoken"


async def test_a_streamed_view_reads_what_it_was_sent() -> None:
    app = LogApp()
    async with app.run_test() as pilot:
        log = app.query_one(ChatLog)
        view = MessageView("assistant", footer="generating…")
        await log.add(view)
        assert view.text == ""
        stream = view.start_stream()
        await stream.write("Paris is ")
        await stream.write("the capital.")
        await stream.stop()
        await pilot.pause()
        assert view.text == "Paris is the capital."
        view.finish(7, {"model": "m", "generated_tokens": 4, "finish_reason": "cancelled"})
        assert view.message_id == 7 and view.footer == "m · 4 tok · ⏹ stopped" and view.has_class("stopped")


def test_a_spoken_reply_is_described_as_spoken_live_and_restored() -> None:
    """The footer a spoken reply gets when it ends is the one a restored conversation shows (it showed none)."""
    latency = "end of speech → transcript 0.42 s → first token 0.60 s → first audio 0.95 s"
    assert describe_metrics({"finish_reason": "stop", "voice_latency": latency}) == "spoken · " + latency
    assert describe_metrics({"finish_reason": "cancelled", "voice_latency": ""}) == \
        "⏹ interrupted · heard what is shown"
    assert describe_metrics({"finish_reason": "cancelled", "generated_tokens": 3}) == "3 tok · ⏹ stopped"

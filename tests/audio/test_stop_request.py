"""An utterance that only asks the assistant to stop is told from one that asks something."""

from __future__ import annotations

import pytest

from edge_ai.config import Config
from runtime.audio.stop_request import StopPhrases, said_after

DEFAULTS = StopPhrases(Config().voice.stop_phrases, Config().voice.stop_fillers)


@pytest.mark.parametrize("text", [
    "Stop.",
    "Stop!",
    "Wait, stop please.",  # bench_voice's cut-ins
    "Stop, that is enough.",
    "Hold on a second.",
    "Okay, okay, that's enough, thanks.",
    "That’s enough.",  # Whisper's curly apostrophe
    "No, no, stop. Stop it.",
    "Shh.",
    "Never mind.",
    "  BE QUIET  ",
    "Sorry, just a moment.",
])
def test_an_utterance_that_only_asks_to_stop_is_told(text):
    assert DEFAULTS.asked_by(text)


@pytest.mark.parametrize("text", [
    "",
    "...",
    "Thank you.",  # fillers alone: answered
    "Okay.",
    "Sorry?",  # "pardon?": asks for the answer again
    "Sorry, let me interrupt.",
    "Wait, what did you say about Paris?",
    "Stop the timer.",
    "How do I stop a process on Linux?",
    "Hold on, let me think.",
    "Stop and tell me the weather.",
    "Stopping",  # a whole word, not a prefix
])
def test_an_utterance_that_asks_something_is_not_taken_for_stop(text):
    assert not DEFAULTS.asked_by(text)


def test_the_phrases_are_the_user_s_own():
    """Another language lists its own phrases and fillers; an empty list answers everything."""
    german = StopPhrases(["stopp", "halt", "warte mal", "das reicht"], fillers=["bitte", "danke", "ok"])
    assert german.asked_by("Stopp, bitte!")
    assert german.asked_by("Ok, das reicht, danke.")
    assert not german.asked_by("Warte, wie spät ist es?")
    assert not german.asked_by("Stop.")
    assert not StopPhrases([], fillers=["please"]).asked_by("Stop please.")


def test_a_phrase_listed_as_both_counts_as_a_stop_phrase():
    assert StopPhrases(["enough"], fillers=["enough", "please"]).asked_by("Enough.")


def test_the_settings_take_lists_of_phrases():
    cfg = Config().with_values({"voice.stop_phrases": ["basta"], "voice.stop_fillers": []})
    stop = StopPhrases(cfg.voice.stop_phrases, cfg.voice.stop_fillers)
    assert stop.asked_by("Basta!") and not stop.asked_by("Stop please.")


@pytest.mark.parametrize("text, expected", [
    ("I got to stop. Please stop.", True),  # bench_voice: "Stop, please stop." cut in over the assistant
    ("Wait, it stop please.", True),  # "Wait, stop please."
    ("Wait, it's stop please.", True),
    ("Wait, it's up, please.", False),  # no stop phrase left
    ("Please don't stop.", False),  # one word after the unsure ones is never enough
    ("I said stop.", False),
    ("Why did you stop talking?", False),  # a question
    ("Tell me how to stop talking", False),  # four words before it
])
def test_a_cut_in_s_first_words_heard_under_the_echo_may_be_passed_over(text, expected):
    assert not DEFAULTS.asked_by(text)
    assert DEFAULTS.asked_by(text, unsure_lead=3) is expected


@pytest.mark.parametrize(("before", "whole", "after"), [
    ("Tell me a story.", "Tell me a story. Stop, please.", "Stop, please."),
    ("Write the numbers 1, 2.", "Write the numbers 1, 2, 3, and so on, up to 500.", "3, and so on, up to 500."),
    # Whisper writes the first part again a little differently: a word changed, added or left out
    ("What color is the sky on a clear day?", "What colour is the sky on a clear day? And at night?",
     "And at night?"),
    ("Tell me a long story.", "Tell me a very long story. Stop.", "Stop."),
    ("Tell me a long story about Zadragon.", "Tell me a long story about a dragon. Stop, please.", "Stop, please."),
    ("Write the numbers 1, 2.", "Write the numbers 1,2, 3.", "3."),
    ("Tell me a story.", "Tell me a story.", ""),  # a noise after the pause: nothing new
    ("", "Stop.", "Stop."),
])
def test_what_a_turn_that_went_on_added_is_found_in_its_new_transcript(before, whole, after):
    assert said_after(before, whole) == after

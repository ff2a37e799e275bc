"""The default model answers like an assistant: a held-out set of simple questions, greedy decoding.

The default Gemma 3 270M is a base model; prompted as a transcript (edge_ai.chat_format) it
should answer at least half of these correctly and end at least 90% of its replies on its own
(finish reason "stop", no invented next turn). None of these questions is one of the
transcript's two examples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.llm.events import DoneEvent, SamplingParams
from runtime.llm.templates import TRANSCRIPT_EXAMPLES

pytestmark = pytest.mark.slow

QUESTIONS = [
    ("What is the capital of France?", ("paris",)),
    ("What is 2 plus 2?", ("4", "four")),
    ("How many days are in a week?", ("7", "seven")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("Who painted the Mona Lisa?", ("vinci",)),
    ("What is the freezing point of water in Celsius?", ("0 ", "zero", "0°")),
    ("How many legs does a spider have?", ("8", "eight")),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What gas do plants absorb from the air?", ("carbon dioxide", "co2")),
    ("What is the chemical symbol for gold?", ("au",)),
    ("How many continents are there?", ("7", "seven")),
    ("What language is spoken in Brazil?", ("portuguese",)),
    ("What is the opposite of hot?", ("cold",)),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What do bees make?", ("honey",)),
    ("How many hours are in a day?", ("24", "twenty-four")),
    ("What is the tallest mountain in the world?", ("everest",)),
    ("Who was the first president of the United States?", ("washington",)),
    ("What is the capital of Italy?", ("rome",)),
]


def is_correct(reply: str, answers: tuple[str, ...]) -> bool:
    text = f" {reply.lower()} "
    return any(answer in text for answer in answers)


def ended_on_its_own(done: DoneEvent) -> bool:
    return done.reason == "stop" and "User:" not in done.text and "Assistant:" not in done.text


def test_questions_are_held_out() -> None:
    examples = {question for question, _ in TRANSCRIPT_EXAMPLES}
    assert not examples & {question for question, _ in QUESTIONS}


def test_default_model_answers_simple_questions(engine) -> None:
    from edge_ai.config import ChatSettings

    system = ChatSettings().system_prompt
    correct = own = 0
    for question, answers in QUESTIONS:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        done = list(engine.chat(messages, SamplingParams(temperature=0.0, max_tokens=96)))[-1]
        correct += is_correct(done.text, answers)
        own += ended_on_its_own(done)
    assert correct >= len(QUESTIONS) / 2, f"{correct}/{len(QUESTIONS)} correct"
    assert own >= 0.9 * len(QUESTIONS), f"{own}/{len(QUESTIONS)} ended on their own"


def test_multi_turn_keeps_the_transcript(engine) -> None:
    messages = [{"role": "user", "content": "What is the capital of Japan?"}]
    first = list(engine.chat(messages, SamplingParams(temperature=0.0, max_tokens=64)))[-1]
    messages += [{"role": "assistant", "content": first.text},
                 {"role": "user", "content": "What is the capital of Italy?"}]
    prompt = engine.render(messages)
    assert prompt.endswith("User: What is the capital of Italy?\nAssistant:")
    assert f"Assistant: {first.text.strip()}\n\nUser: What is the capital of Italy?" in prompt
    second = list(engine.chat(messages, SamplingParams(temperature=0.0, max_tokens=64)))[-1]
    assert ended_on_its_own(second) and is_correct(second.text, ("rome",))


def test_prompt_starts_with_one_bos(engine) -> None:
    tokens = engine.encode([{"role": "user", "content": "Hi"}])
    bos = engine.tokenize("<bos>")[0]
    assert tokens[0] == bos and tokens[1] != bos


def test_ask_answers_and_stops_through_the_cli(registered_model: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "edge_ai", "ask", "-t", "0", "--json",
                             "What is the capital of France?"], capture_output=True, text=True, timeout=120)
    data = json.loads(result.stdout)
    assert data["finish_reason"] == "stop" and "paris" in data["reply"].lower()

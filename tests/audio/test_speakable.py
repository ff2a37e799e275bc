"""The LLM's markdown stream cut into speakable chunks: boundaries, markdown read aloud, streaming invariance."""

from __future__ import annotations

import random

import pytest

from runtime.audio.speakable import CODE_BLOCK_REMARK, ChunkOptions, SpeakableChunker, speakable_text


def chunks_of(text: str, options: ChunkOptions | None = None) -> list[str]:
    chunker = SpeakableChunker(options)
    return chunker.feed(text) + chunker.flush()


def streamed(text: str, seed: int, options: ChunkOptions | None = None) -> list[str]:
    """Chunks from `text` fed in random 1-7 character tokens, as an LLM streams it."""
    rng, chunker, out, i = random.Random(seed), SpeakableChunker(options), [], 0
    while i < len(text):
        n = rng.randint(1, 7)
        out += chunker.feed(text[i:i + n])
        i += n
    return out + chunker.flush()


REPLY = """# Getting started

Sure, here is how you do it: first install the package. Dr. Smith said pi is 3.14, e.g. in **most** cases!
See [the docs](https://docs.python.org/3/) or https://www.example.com/path?x=1 for more.

- install `pip`
- run *the* tool
1. step one
2. step two

```python
print("hello")
x = 1
```

| Name | Age |
|------|-----|
| Alice | 30 |

That's all, folks. The variable snake_case_name stays whole.
"""


def test_reply_is_read_as_a_person_would():
    assert chunks_of(REPLY) == [
        "Getting started.",
        "Sure, here is how you do it: first install the package.",
        "Dr. Smith said pi is 3.14, e.g. in most cases!",
        "See the docs or example.com for more.",
        "install pip.", "run the tool.", "step one.", "step two.",
        CODE_BLOCK_REMARK,
        "Name, Age.", "Alice, 30.",
        "That's all, folks.", "The variable snake_case_name stays whole.",
    ]


@pytest.mark.parametrize("seed", range(25))
def test_chunks_do_not_depend_on_how_tokens_are_split(seed):
    assert streamed(REPLY, seed) == chunks_of(REPLY)


def test_first_chunk_ends_at_the_first_clause_after_three_words():
    chunker = SpeakableChunker()
    assert chunker.feed("Well, ") == []  # one word: too short to say on its own
    assert chunker.feed("the answer is simple, ") == ["Well, the answer is simple,"]
    assert chunker.feed("you see, it is forty") == []  # later chunks wait for the sentence end
    assert chunker.feed("-two. And") == ["you see, it is forty-two."]
    assert chunker.flush() == ["And"]


def test_first_chunk_is_released_while_the_line_is_still_streaming():
    chunker = SpeakableChunker()
    out = []
    for token in ["The", " capital", " of", " France", ","]:
        out += chunker.feed(token)
    assert out == []  # a comma is a boundary only once the next character shows it is not "1,000"
    assert chunker.feed(" as") == ["The capital of France,"]
    assert chunker.feed(" you know, is Paris") == []  # later chunks end at sentences
    assert chunker.feed(". ") == ["as you know, is Paris."]


LONG_FIRST = {
    "The capital of France is Paris which is known for the Eiffel Tower and its museums. It is big.":
        ["The capital of France is Paris", "which is known for the Eiffel Tower and its museums.", "It is big."],
    "Rome was founded in 753 BC according to legend and grew into a vast empire over the centuries.":
        ["Rome was founded in 753 BC according to legend", "and grew into a vast empire over the centuries."],
    # not after a word that leans on the next ("by which"), nor in a sentence of up to eight words
    "Photosynthesis is the process by which green plants turn light into energy.":
        ["Photosynthesis is the process by which green plants turn light into energy."],
    "The capital of France is Paris and Lyon.": ["The capital of France is Paris and Lyon."],
    # only the first chunk: later sentences end at their ends
    "Yes. The capital of France is Paris which is known for the tower.":
        ["Yes.", "The capital of France is Paris which is known for the tower."],
}


@pytest.mark.parametrize("text", LONG_FIRST)
def test_a_long_first_sentence_without_a_comma_is_cut_before_a_phrase(text):
    """The first chunk is what the listener waits for: a first sentence of more than eight words with no
    clause boundary is cut where a reader would breathe, before "which", "and", "because"..."""
    assert chunks_of(text) == LONG_FIRST[text]
    assert all(streamed(text, seed) == LONG_FIRST[text] for seed in range(20))


def test_the_phrase_break_is_released_as_soon_as_its_words_have_come():
    chunker = SpeakableChunker()
    out = []
    for token in ["The", " capital", " of", " France", " is", " Paris", " which", " is", " known"]:
        out += chunker.feed(token)
    assert out == []  # eight whole words so far ("known" may go on): not long enough to cut
    assert chunker.feed(" for") == ["The capital of France is Paris"]


@pytest.mark.parametrize("text", [
    "Use a tool, e.g. a hammer, for this job.",
    "Pi is about 3.14159 and e is 2.718 roughly.",
    "Ask Dr. Who and Mr. Smith about it.",
    "Go to example.com/docs?page=2 and read it.",
    "It costs 1,000 dollars, i.e. a lot.",
    "J. R. R. Tolkien wrote it.",
])
def test_no_split_inside_abbreviations_numbers_urls(text):
    assert chunks_of(text) == [text] or " ".join(chunks_of(text)) == text
    assert all(not c.endswith(("e.g.", "Dr.", "Mr.", "3.", "i.e.", "J.", "R.")) for c in chunks_of(text))


def test_sentences_after_the_first_end_at_sentence_marks_and_paragraphs():
    text = "One two three four. Five six? Seven eight!\n\nA paragraph without a full stop\n\nLast one"
    assert chunks_of(text) == ["One two three four.", "Five six?", "Seven eight!", "A paragraph without a full stop",
                               "Last one"]


def test_long_sentences_are_cut_at_a_clause_then_at_a_space():
    options = ChunkOptions(max_chars=60)
    clause = "This goes on and on, with commas here and there, and never a full stop until the very end of it."
    got = chunks_of("Short. " + clause, options)
    assert got[0] == "Short."
    assert all(len(c) <= 60 for c in got)
    assert got[1].endswith(",")
    assert " ".join(got) == "Short. " + clause
    words = "word " * 40
    cut = chunks_of("First. " + words.strip() + ".", options)
    assert all(len(c) <= 60 for c in cut) and " ".join(cut) == "First. " + words.strip() + "."


@pytest.mark.parametrize("seed", range(5))
def test_long_text_streams_like_whole(seed):
    options = ChunkOptions(max_chars=50)
    text = ("A rather long opening clause, then more words keep coming without a stop; and then some more, " * 3
            + "finally. Done.")
    assert streamed(text, seed, options) == chunks_of(text, options)


def test_code_block_is_one_remark_not_its_characters():
    text = "Run this:\n\n```bash\npip install x\nedge-ai say hi\n```\n\nThen it works."
    got = chunks_of(text)
    assert got == ["Run this:", CODE_BLOCK_REMARK, "Then it works."]
    assert not any("pip" in c for c in got)


def test_unclosed_code_block_at_the_end_says_the_remark_once():
    assert chunks_of("Here:\n```\nx = 1\ny = 2") == ["Here:", CODE_BLOCK_REMARK]


@pytest.mark.parametrize("markdown,spoken", [
    ("**bold** and __strong__ and *it* and _em_ and ~~gone~~", "bold and strong and it and em and gone"),
    ("call `foo()` now", "call foo() now"),
    ("read [the guide](http://x.org/guide) and ![a cat](cat.png)", "read the guide and a cat"),
    ("see <https://github.com/a/b>", "see github.com"),
    ("### Heading ###", "Heading."),
    ("> quoted text", "quoted text"),
    ("- [x] done task", "done task."),
    ("2 * 3 = 6 and a_b_c", "2 * 3 = 6 and a_b_c"),
    ("---", ""),
    ("<b>html</b> tags", "html tags"),
])
def test_markdown_made_speakable(markdown, spoken):
    assert speakable_text(markdown) == spoken


def test_table_rows_read_as_sentences():
    table = "| Model | Size | Speed |\n|:---|---:|:---:|\n| gemma | 270M | fast |\n| llama | 8B | slow |\n"
    assert speakable_text(table) == "Model, Size, Speed. gemma, 270M, fast. llama, 8B, slow."


def test_empty_and_whitespace_replies_have_no_chunks():
    assert chunks_of("") == []
    assert chunks_of("  \n\n  ") == []
    assert chunks_of("```\ncode only\n```") == [CODE_BLOCK_REMARK]


@pytest.mark.parametrize("text,chunks", [
    ("He told us. Then he left.", ["He told us.", "Then he left."]),
    ("I said no. It is late.", ["I said no.", "It is late."]),
    ("They met at 9 a.m. in the U.S. office today.", ["They met at 9 a.m. in the U.S. office today."]),
    ("Apples, pears, etc. Then more.", ["Apples, pears, etc.", "Then more."]),
    ("Well... I think so. Yes!", ["Well...", "I think so.", "Yes!"]),
])
def test_sentence_ends_next_to_abbreviation_like_words(text, chunks):
    assert chunks_of(text) == chunks

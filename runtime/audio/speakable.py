"""The LLM's markdown token stream, cut into chunks a TTS voice can say.

    chunker = SpeakableChunker()
    for token in reply:
        for chunk in chunker.feed(token):   # finished chunks, in order
            speak(chunk)
    for chunk in chunker.flush():           # the rest, at the end of the reply
        speak(chunk)

    speakable_text("## Setup\\n- run `make`\\n")  ->  "Setup. Run make."

Why chunks: synthesis and playback of one chunk overlap the generation of the next, so speech starts
as soon as the first chunk is complete. The first chunk is cut early, at the first clause boundary
(a comma, colon, semicolon or dash after a few words); a first sentence that runs past
`first_max_words` with no such boundary is cut before the first word that opens a phrase ("The capital
of France is Paris | which is known for ...": a conjunction, a relative pronoun, a few prepositions),
where a reader could take a breath: bench_voice's slowest turns had waited ~0.6 s there for a comma
(first token -> first audio p95 0.63 s, p50 0.25; 0.22 s at p95 after, one run). Later chunks end at
sentence ends or paragraphs, and a run-on sentence is cut at its last clause boundary (else a space)
before `max_chars`. A period followed by a non-space ("3.14", "example.com") or ending a known
abbreviation ("e.g.", "Dr.") or an initial ("J. Smith") ends nothing.

Markdown is read the way a person would read it aloud: emphasis and code markers dropped, links as
their text, bare URLs as their host, headings, list items and table rows as sentences, and a
fenced code block as one short remark instead of its characters.

Lines are handled whole (a heading or a table row is known from its start); inside a line that is
still arriving, text is released only up to a boundary with no link or code span left open, so a
chunk never changes once emitted and the chunks do not depend on how the text was split into tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CODE_BLOCK_REMARK = "Code block omitted."  # said once per fenced code block

# words whose trailing period is not a sentence end (lowercase). Dotted letters ("e.g.", "U.S.", "a.m.")
# are abbreviations by their shape; words that also end sentences ("no", "us", "am") are not listed.
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "cf", "al", "approx", "fig", "vol", "dept", "mt",
    "jan", "feb", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
})
_DOTTED_LETTERS = re.compile(r"^(?:[a-zA-Z]\.)+[a-zA-Z]$")


# words that open a phrase: a long first sentence may be cut before one (not "to", "of", "in": "like | to
# go", "the history | of Rome" break a phrase where nobody would pause)
PHRASE_OPENERS = frozenset({
    "and", "but", "or", "so", "because", "which", "who", "whose", "where", "when", "while", "although", "though",
    "if", "unless", "since", "until", "after", "before", "with", "without", "for",
})

# words that lean on the next one: no phrase break after them ("the process by | which", "more or | less")
LEANING_WORDS = frozenset({
    "a", "an", "the", "of", "to", "in", "on", "at", "by", "from", "about", "into", "onto", "upon", "than", "as",
    "and", "or", "but", "nor", "for", "with", "without", "so", "if", "not", "no", "my", "your", "his", "her", "its",
    "our", "their", "this", "that", "these", "those", "some", "any", "each", "every", "very", "more", "most",
})


@dataclass(frozen=True)
class ChunkOptions:
    first_min_words: int = 3  # the first chunk may end at a clause boundary once it has this many words
    first_max_words: int = 8  # a first sentence longer than this with no clause boundary is cut at a phrase
    max_chars: int = 220  # a chunk longer than this is cut at a clause boundary or a space


# --- inline markdown -> plain words ---------------------------------------------------------------

_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_URL = re.compile(r"\bhttps?://([^/\s?#)>\]]+)[^\s)>\]]*")
_CODE_SPAN = re.compile(r"`+([^`]*)`+")
_EMPHASIS = re.compile(r"(?<![\w*])(\*{1,3}|_{1,3}|~~)(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_LEFTOVER_MARKS = re.compile(r"\*{2,}|~~|`+|(?<!\w)[*_]+(?=\w)|(?<=\w)[*_]+(?!\w)")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_SPACES = re.compile(r"\s+")


def _inline(text: str) -> str:
    """Plain words from one line's inline markdown."""
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _REF_LINK.sub(r"\1", text)
    text = _AUTOLINK.sub(r"\1", text)
    text = _URL.sub(lambda m: m.group(1).removeprefix("www."), text)
    text = _CODE_SPAN.sub(r"\1", text)
    text = _HTML_TAG.sub("", text)
    while True:
        stripped = _EMPHASIS.sub(r"\2", text)
        if stripped == text:
            break
        text = stripped
    text = _LEFTOVER_MARKS.sub("", text)
    return _SPACES.sub(" ", text).strip()


# --- block markdown (one line at a time) ----------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+(?:\[[ xX]\]\s+)?")
_QUOTE = re.compile(r"^\s*(?:>\s?)+")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_ENDS_SENTENCE = re.compile(r"[.!?:;][\"')\]]*$")


def _as_sentence(text: str) -> str:
    """A heading, list item or table row read as its own sentence: end it with a period."""
    if text and not _ENDS_SENTENCE.search(text):
        text += "."
    return text


def _line(raw: str) -> tuple[str, bool]:
    """(spoken text, is it a sentence of its own) for one whole line outside code blocks."""
    if _RULE.match(raw) or _TABLE_SEPARATOR.match(raw) and "-" in raw and "|" in raw:
        return "", False
    if heading := _HEADING.match(raw):
        return _as_sentence(_inline(heading.group(1))), True
    if raw.lstrip().startswith("|"):
        cells = [_inline(cell) for cell in raw.strip().strip("|").split("|")]
        return _as_sentence(", ".join(cell for cell in cells if cell)), True
    body = _QUOTE.sub("", raw)
    if bullet := _BULLET.match(body):
        return _as_sentence(_inline(body[bullet.end():])), True
    return _inline(body), False


def _line_prefix_end(raw: str) -> int:
    """Where the words of a line start, after its block markers (heading #, bullet, quote >)."""
    if heading := re.match(r"^\s{0,3}#{1,6}\s+", raw):
        return heading.end()
    quote = _QUOTE.match(raw)
    start = quote.end() if quote else 0
    bullet = _BULLET.match(raw[start:])
    return start + (bullet.end() if bullet else 0)


# --- boundaries -----------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?:[.!?]+|\u2026)[\"'\u201d\u2019)\]]*(?=\s)")
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[-\u2013\u2014]|\u2014)(?=\s)")
_WORD_BEFORE = re.compile(r"([\w.]+)[.]$")


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the period at `dot` ends an abbreviation, an initial or a list number, not a sentence."""
    match = _WORD_BEFORE.search(text, 0, dot + 1)
    if not match:
        return False
    word = match.group(1)
    return (word.lower() in ABBREVIATIONS or _DOTTED_LETTERS.match(word) is not None
            or (len(word) == 1 and word.isalpha() and word.isupper()))


def _sentence_ends(text: str) -> list[int]:
    """Offsets just after each sentence end in `text` (a following whitespace must already be there)."""
    ends = []
    for match in _SENTENCE_END.finditer(text):
        mark = match.group(0)
        if mark.startswith(".") and len(mark.rstrip("\"'\u201d\u2019)]")) == 1 and _is_abbreviation(text, match.start()):
            continue
        ends.append(match.end())
    return ends


def _clause_ends(text: str) -> list[int]:
    return [m.end() for m in _CLAUSE_END.finditer(text)]


_WORD_END = re.compile(r"(?<=\S)\s")
_PHRASE_OPENER = re.compile(rf"(?<=\w)\s+({'|'.join(sorted(PHRASE_OPENERS))})(?=\s|$)", re.IGNORECASE)


def _phrase_breaks(text: str) -> list[int]:
    """Offsets just after each word that a phrase opener follows and that does not lean on it ("Paris| which")."""
    return [m.start() for m in _PHRASE_OPENER.finditer(text)
            if text[:m.start()].split()[-1].lower() not in LEANING_WORDS]


class SpeakableChunker:
    """Markdown tokens in, speakable chunks out (see the module docstring)."""

    def __init__(self, options: ChunkOptions | None = None) -> None:
        self.options = options or ChunkOptions()
        self._raw = ""  # markdown received and not yet turned into words
        self._line_sentence = False  # the current line's start was released already and it is a sentence of its own
        self._line_started = False  # part of the current line was released (its block markers are gone)
        self._in_code = False
        self._words = ""  # speakable text not yet cut into chunks
        self._emitted = 0

    def feed(self, text: str) -> list[str]:
        """Take more of the reply; return the chunks it completed."""
        self._raw += text
        self._consume(final=False)
        return self._cut(final=False)

    def flush(self) -> list[str]:
        """The reply is complete: return every remaining chunk."""
        self._consume(final=True)
        return self._cut(final=True)

    # raw markdown -> words
    def _consume(self, final: bool) -> None:
        while self._raw:
            newline = self._raw.find("\n")
            if newline < 0:
                if not final:
                    self._release_partial_line()
                    return
                newline = len(self._raw)
            line, self._raw = self._raw[:newline], self._raw[newline + 1:]
            self._whole_line(line)

    def _whole_line(self, raw: str) -> None:
        started, self._line_started = self._line_started, False
        sentence, self._line_sentence = self._line_sentence, False
        if self._in_code:
            if _FENCE.match(raw):
                self._in_code = False
            return
        if not started and _FENCE.match(raw):
            self._in_code = True
            self._paragraph_break()
            self._add(CODE_BLOCK_REMARK)
            self._paragraph_break()
            return
        if started:  # the rest of a line whose start was released: its block markers are gone already
            text = _inline(raw)
            text, sentence = (_as_sentence(text), True) if sentence else (text, False)
        elif not raw.strip():
            self._paragraph_break()
            return
        else:
            text, sentence = _line(raw)
        self._add(text)
        if sentence:
            self._words = self._words.rstrip() + " "

    def _release_partial_line(self) -> None:
        """Move words of the line still arriving up to its last safe boundary, so speech can start."""
        if self._in_code:
            return
        raw = self._raw
        if not self._line_started:
            stripped = raw.lstrip()
            if not stripped or stripped[0] in "`~|#" or _RULE.match(raw) or re.fullmatch(r"\s*(\d{1,3}|[-*+>])", raw):
                return  # a fence, table row or heading, or a marker that is not yet known: wait for the line
            start = _line_prefix_end(raw)
            if start == len(raw):
                return
        else:
            start = 0
        words = raw[start:]
        # the first chunk may end at a phrase break, which only whole words show: they are released as they come
        cut = self._safe_cut(words, [m.start() for m in _WORD_END.finditer(words)] if self._emitted == 0 else [])
        if cut <= 0:
            return
        if not self._line_started:
            self._line_sentence = _BULLET.match(_QUOTE.sub("", raw)) is not None
        self._line_started = True
        self._add(_inline(words[:cut]))
        self._words += " "
        self._raw = words[cut:].lstrip(" \t")

    @staticmethod
    def _safe_cut(words: str, more: list[int]) -> int:
        """The last boundary in a partial line (a sentence or clause end, or one of `more`) before which no link,
        code span or emphasis is left open."""
        for end in reversed(sorted(set(_sentence_ends(words) + _clause_ends(words) + more))):
            head = words[:end]
            if (head.count("`") % 2 == 0 and head.count("[") == head.count("]") and "](" not in words[end:end + 3]
                    and head.count("**") % 2 == 0 and head.count("(") == head.count(")")):
                return end
        return 0

    def _add(self, text: str) -> None:
        if not text:
            return
        if not self._words.strip():
            self._words = text
        elif self._words.endswith("\n"):  # after a paragraph break, which must survive until it is cut
            self._words += text
        else:
            self._words = f"{self._words.rstrip(' ')} {text}"

    def _paragraph_break(self) -> None:
        """A blank line, or a code block: what came before is a finished chunk."""
        if self._words.strip():
            self._words = self._words.rstrip() + "\n"

    # words -> chunks
    def _cut(self, final: bool) -> list[str]:
        chunks = []
        while True:
            end = self._next_end()
            if end is None:
                break
            chunk, self._words = self._words[:end].strip(), self._words[end:].lstrip()
            if chunk:
                chunks.append(chunk)
                self._emitted += 1
        if final and self._words.strip():
            chunks.append(self._words.strip())
            self._emitted += 1
        if final:
            self._words = ""
        return chunks

    def _next_end(self) -> int | None:
        """Where the next chunk ends in the words so far, or None to wait for more."""
        words, limit = self._words, self.options.max_chars
        paragraph = words.find("\n")
        ends = _sentence_ends(words)
        if paragraph >= 0:
            ends.append(paragraph)
        if self._emitted == 0:
            ends += [e for e in _clause_ends(words) if len(words[:e].split()) >= self.options.first_min_words]
            ends += self._first_phrase_breaks(words, min(ends, default=len(words)))
        ends = sorted(e for e in ends if words[:e].strip())
        if ends and ends[0] <= limit:
            return ends[0]
        if len(words) <= limit:
            return None
        head = words[:limit + 1]
        clauses = [e for e in _clause_ends(head) if len(head[:e].split()) >= self.options.first_min_words]
        if clauses:
            return clauses[-1]
        space = head.rstrip().rfind(" ")
        return space if space > 0 else limit

    def _first_phrase_breaks(self, words: str, first_end: int) -> list[int]:
        """Phrase breaks at which the first chunk may end: only in a first sentence longer than `first_max_words`
        words up to its first end (or so far, with none yet), and after `first_min_words`. Words arrive whole,
        so the break found is the same however the reply was split into tokens."""
        head = words[:first_end]
        if len(head.split()) <= self.options.first_max_words:
            return []
        return [e for e in _phrase_breaks(head) if len(head[:e].split()) >= self.options.first_min_words]


def speakable_text(markdown: str, options: ChunkOptions | None = None) -> str:
    """A whole markdown text as one speakable string."""
    chunker = SpeakableChunker(options)
    return " ".join(chunker.feed(markdown) + chunker.flush())

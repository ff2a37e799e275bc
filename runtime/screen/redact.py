"""Redaction of personal data and secrets in text (OCR'd screens, pasted text) before anything else sees it.

    redact("Card 4111 1111 1111 1111, mail jo@example.com").text
    -> "Card [card], mail [email]"

Kinds: email, phone, card, iban, national_id, key (API keys, tokens, private key blocks) and password.
The replacement names the kind, so an LLM reading the text still knows a card number was there.

Each detector finds candidates; numbers are only taken when their checksum holds (Luhn for cards,
ISO 13616 mod-97 and the country's layout for IBANs, the national check digits for IDs, via
python-stdnum) or, for formats without one that look like ordinary numbers (a bare 9-digit SSN, a
Dutch BSN, an unseparated phone number), when a label such as "SSN" or "tel" stands right before
them. Candidates that overlap are settled by kind priority (a private key block over the key-like
lines inside it, a card over the phone number it could also be), then by length.

Passwords are the value after a password label ("Password: x", "pwd=x", "passwd x", JSON/YAML/env keys,
URL credentials, an HTML password input, or the line below a lone "Password" label of a form); a bare word
after "password" in prose ("the password is stored hashed") is not one. Keys are the providers' token
formats, private key blocks (also cut off by the screen edge) and random-looking values after words like
key/token/secret.

OCR noise handled: one or two spaces (or a dash) where a number's groups meet, e.g. "4111  1111 1111 1111",
and a label on the line above its value. Letters read as digits (O/0, l/1) are not guessed at: a guess
would redact ordinary words.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.be import nn as be_nn
from stdnum.de import idnr as de_idnr
from stdnum.es import dni as es_dni
from stdnum.es import nie as es_nie
from stdnum.fi import hetu as fi_hetu
from stdnum.fr import nir as fr_nir
from stdnum.gb import nhs as gb_nhs
from stdnum.it import codicefiscale as it_cf
from stdnum.nl import bsn as nl_bsn
from stdnum.pl import pesel as pl_pesel
from stdnum.se import personnummer as se_pn
from stdnum.us import ssn as us_ssn

KINDS = ("email", "phone", "card", "iban", "national_id", "key", "password")
_PLACEHOLDERS = frozenset(f"[{kind}]" for kind in KINDS)


@dataclass(frozen=True)
class Finding:
    """One redacted span: `kind` (one of KINDS) and its place [start, end) in the ORIGINAL text."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Redacted:
    """The text with every finding replaced by `[kind]`, and the findings in text order."""

    text: str
    findings: tuple[Finding, ...]


# ---------------------------------------------------------------- helpers

# Between two digit groups of one number: a space or two (OCR widens gaps), or a dash with optional spaces.
_GAP = r"(?:[ \t]{1,2}|[ \t]?-[ \t]?)"
_DIGIT_RUN = re.compile(rf"(?<![\w./:-])\d+(?:{_GAP}\d+)*(?![\w])")
_GROUP = re.compile(r"\d+")


def _near(text: str, start: int, label: re.Pattern[str], before: int = 40) -> bool:
    """Whether `label` occurs in the `before` characters ahead of `start` (same or previous line)."""
    return label.search(text, max(0, start - before), start) is not None


def _group_windows(text: str, start: int, end: int, lo: int, hi: int) -> Iterator[tuple[int, int, str]]:
    """(start, end, digits) of runs of whole digit groups inside text[start:end] holding lo..hi digits,
    longest first from each group: a card followed by its CVV ("4111 ... 1111 123") still yields the card."""
    groups = [(m.start() + start, m.end() + start, m.group()) for m in _GROUP.finditer(text[start:end])]
    for i in range(len(groups)):
        digits = ""
        windows = []
        for j in range(i, len(groups)):
            digits += groups[j][2]
            if len(digits) > hi:
                break
            if len(digits) >= lo:
                windows.append((groups[i][0], groups[j][1], digits))
        yield from reversed(windows)


def _entropy(value: str) -> float:
    """Shannon entropy in bits per character: random tokens sit near 4-6, words and paths lower."""
    counts = Counter(value)
    return -sum(c / len(value) * math.log2(c / len(value)) for c in counts.values())


# ---------------------------------------------------------------- detectors: each yields Findings

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,24}"
                    r"(?![\w-])")


def _emails(text: str) -> Iterator[Finding]:
    for m in _EMAIL.finditer(text):
        yield Finding("email", m.start(), m.end())


def _card_prefix(digits: str) -> bool:
    """Issuer ranges of the card networks (Visa 4, Mastercard 51-55 and 2221-2720, Amex 34/37, Diners 30/36/38/39,
    JCB 35, Discover/UnionPay/Maestro 6, Maestro 50/56-58): a Luhn-valid number elsewhere is not a card."""
    return digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720


_NOT_CARD_LABEL = re.compile(r"(?i)\b(?:imei|meid|imsi|iccid|serial)\b\W{0,3}$")


def _cards(text: str) -> Iterator[Finding]:
    for run in _DIGIT_RUN.finditer(text):
        if _NOT_CARD_LABEL.search(text, max(0, run.start() - 20), run.start()):
            continue  # device identifiers use the Luhn check too
        taken = run.start()
        for start, end, digits in _group_windows(text, run.start(), run.end(), 13, 19):
            if start >= taken and _card_prefix(digits) and luhn.is_valid(digits):
                yield Finding("card", start, end)
                taken = end


# The country code as OCR may read it: a letter O as a zero ("N093 8601 ..." for NO93); the checksum decides
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])(?:[A-Z][A-Z0]|0[A-Z])\d{2}")
_IBAN_RUN = re.compile(r"[A-Z0]{2}\d{2}(?:(?:[ \t]{1,2}|-)?[A-Z0-9]+)*")


def _ibans(text: str) -> Iterator[Finding]:
    position = 0
    while (head := _IBAN_START.search(text, position)) is not None:
        run = _IBAN_RUN.match(text, head.start())
        assert run is not None  # the head itself matches
        groups = [(m.start(), m.end()) for m in re.finditer(r"[A-Z0-9]+", run.group())]
        found = None
        compact = ""
        candidates = []
        for g_start, g_end in groups:
            compact += run.group()[g_start:g_end]
            if len(compact) > 34:
                break
            if len(compact) >= 15:
                candidates.append((head.start() + g_end, compact))
        for end, value in reversed(candidates):
            if stdnum_iban.is_valid(value[:2].replace("0", "O") + value[2:]):
                found = Finding("iban", head.start(), end)
                break
        if found:
            yield found
            position = found.end
        else:
            position = head.end()


@dataclass(frozen=True)
class _IdFormat:
    """A national ID: where it may be (`pattern`), its check (`valid`), and whether it needs a label
    before it (`label`) because its shape alone is an ordinary number."""

    pattern: re.Pattern[str]
    valid: Callable[[str], bool]
    label: re.Pattern[str] | None = None


def _id(pattern: str, valid: Callable[[str], bool], label: str | None = None) -> _IdFormat:
    return _IdFormat(re.compile(rf"(?<![\w.-])(?:{pattern})(?![\w]|[.-]\w)"), valid,
                     re.compile(label, re.IGNORECASE) if label else None)


_NINO_LETTERS = re.compile(r"^(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]")
_ID_FORMATS = (
    # US social security number: 3-2-4 with dashes or spaces; bare 9 digits only after a label
    _id(r"\d{3}(?:-|[ \t]{1,2})\d{2}(?:-|[ \t]{1,2})\d{4}", us_ssn.is_valid),
    _id(r"\d{9}", us_ssn.is_valid, r"\b(?:ssn|social security|soc\.? ?sec)"),
    # UK National Insurance number (no check digit; the letter pairs HMRC never issues are excluded)
    _id(r"[A-Z]{2}[ \t]?\d{2}[ \t]?\d{2}[ \t]?\d{2}[ \t]?[A-D]",
        lambda v: _NINO_LETTERS.match(v) is not None),
    # UK NHS number (mod 11), shaped like a phone number: only after a label
    _id(r"\d{3}[ \t-]?\d{3}[ \t-]?\d{4}", gb_nhs.is_valid, r"\bnhs\b"),
    # Spain DNI / NIE (check letter mod 23)
    _id(r"\d{8}[ \t-]?[A-Z]", es_dni.is_valid),
    _id(r"[XYZ][ \t-]?\d{7}[ \t-]?[A-Z]", es_nie.is_valid),
    # Italy codice fiscale (check letter)
    _id(r"[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z]", it_cf.is_valid),
    # France NIR / numéro de sécurité sociale (key mod 97), usually grouped 1 85 05 78 006 084 36
    _id(r"[12][ \t]?\d{2}[ \t]?\d{2}[ \t]?(?:\d{2}|2[AB])[ \t]?\d{3}[ \t]?\d{3}[ \t]?\d{2}", fr_nir.is_valid),
    # Sweden personnummer YYMMDD-NNNN (Luhn), Finland HETU DDMMYY-NNNC, Belgium YY.MM.DD-NNN.CC
    _id(r"(?:\d{2})?\d{6}[-+]\d{4}", se_pn.is_valid),
    _id(r"\d{6}[-+A-FU-Y]\d{3}[0-9A-Y]", fi_hetu.is_valid),
    _id(r"\d{2}\.\d{2}\.\d{2}-\d{3}\.\d{2}", be_nn.is_valid),
    # Netherlands BSN (11-test), Poland PESEL, Germany Steuer-IdNr: plain digit strings, only after a label
    _id(r"\d{4}\.?\d{2}\.?\d{3}|\d{9}", nl_bsn.is_valid, r"\b(?:bsn|burgerservice)"),
    _id(r"\d{11}", pl_pesel.is_valid, r"\bpesel\b"),
    _id(r"\d{2}[ \t]?\d{3}[ \t]?\d{3}[ \t]?\d{3}", de_idnr.is_valid,
        r"\b(?:steuer-?id|steuerliche identifikationsnummer|identifikationsnummer|idnr|tax id)"),
)


def _national_ids(text: str) -> Iterator[Finding]:
    for fmt in _ID_FORMATS:
        for m in fmt.pattern.finditer(text):
            if fmt.label is not None and not _near(text, m.start(), fmt.label):
                continue
            if fmt.valid(re.sub(r"[ \t]", "", m.group())):
                yield Finding("national_id", m.start(), m.end())


_PHONE_LABEL = re.compile(r"(?i)(?:\b(?:tel|telephone|phone|ph|mobile|mob|cell|fax|call|calling|whatsapp|sms|text me"
                          r"|contact|handy|telefon|tél|téléphone|portable)\b\.?:?|(?:^|\s)[TMF]:)\s*(?:\+|\(|\d)")
_NOT_PHONE_LABEL = re.compile(r"(?i)(?:\b(?:order|invoice|inv|ref|reference|ticket|tracking|case|po|sku|serial|isbn|"
                              r"account|acct|id|no|nr|build|version|ver|iban|bic|card|ssn|nhs|pesel|bsn|clause|section|article|rfc|iso"
                              r"|din|patent)\b|[#§])"
                              r"(?:\s+(?:number|num|no|nr|id))?(?:\s+(?:is|was))?\W{0,3}$")
_PHONE_GAP = r"(?:[ \t]{1,2}|[ \t]?[.-][ \t]?)"  # between groups: a space or two (OCR), or a dot or dash
# (pattern, international): a number starting with + or 00 is a phone number whatever precedes it; a national
# one is not when a label such as "order" or "invoice" stands right before it.
_PHONE_PATTERNS = (
    # +CC or 00CC, then groups (an area code may sit in parentheses, "(0)" included)
    (re.compile(r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}(?:(?:[ \t.-]{1,2}|[ \t]?(?=\())\(?\d{1,5}\)?){2,6}(?![\w]|[.,]\d)"), True),
    (re.compile(r"(?<![\w+])\+[1-9]\d{7,14}(?![\w]|[.,]\d)"), True),  # E.164 written compact: +14155550132
    # North American: (415) 555-0132, 415-555-0132, 415.555.0132, 415 555 0132, 1-800-555-0199
    (re.compile(rf"(?<![\w.+-])(?<!\d[ \t])(?:1[ .-])?(?:\([2-9]\d{{2}}\)[ \t]{{0,2}}|[2-9]\d{{2}}{_PHONE_GAP})[2-9]\d{{2}}"
                rf"{_PHONE_GAP}\d{{4}}(?![\w-]|[.,:]\d)"), False),
    # national numbers with a trunk 0: 020 7946 0958, 07700 900123, 030 12345678, (030) 1234567, 089/1234567,
    # 06 12 34 56 78
    (re.compile(r"(?<![\w.+/-])(?<!\d[ \t])(?:\(0\d{1,4}\)[ \t]?|0\d{1,4}(?:[ \t]{1,2}|[ \t]?[/-][ \t]?))\d{2,4}"
                r"(?:[ \t.-]?\d{2,5}){0,3}(?![\w-]|[.,:/]\d)"), False),
    (re.compile(r"(?<![\w.+/-])0[1-9](?:\.\d{2}){4}(?![\w-]|[.,:/]\d)"), False),  # 06.12.34.56.78
)
_ZIP_PLUS_4 = re.compile(r"^\d{5}-\d{4}$")  # "Boston, MA 02110-1301"
_PHONE_LABELLED = re.compile(r"(?<![\w+])\+?\(?\d[\d \t().-]{5,18}\d(?![\w])")
_DATE_OR_DECIMAL = re.compile(r"^(?:\d{4}[-./ ]\d{1,2}[-./ ]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})(?!\d)|^\d+\.\d+$")


def _phone_digits_ok(value: str) -> bool:
    """E.164 allows at most 15 digits; fewer than 7 is an extension or a short code, not a phone number."""
    return 7 <= sum(ch.isdigit() for ch in value) <= 15


def _phones(text: str) -> Iterator[Finding]:
    for pattern, international in _PHONE_PATTERNS:
        for m in pattern.finditer(text):
            digits = sum(ch.isdigit() for ch in m.group())
            if not _phone_digits_ok(m.group()) or (not international and digits < 9):
                continue
            if not international and (_ZIP_PLUS_4.match(m.group())
                                      or _NOT_PHONE_LABEL.search(text, max(0, m.start() - 20), m.start())):
                continue
            yield Finding("phone", m.start(), m.end())
    for label in _PHONE_LABEL.finditer(text):  # after "tel:", "mobile" ...: any number of phone length
        m = _PHONE_LABELLED.match(text, label.end() - 1)
        if m and _phone_digits_ok(m.group()) and not _DATE_OR_DECIMAL.match(m.group()):
            yield Finding("phone", m.start(), m.end())


_KEY_PATTERNS = tuple(re.compile(p) for p in (
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA)[A-Z2-7]{16}(?![A-Za-z0-9])",  # AWS key id
    r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])",  # GitHub classic / OAuth / app tokens
    r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}",  # GitHub fine-grained personal access token
    r"(?<![A-Za-z0-9])xox[abposre]-[A-Za-z0-9-]{10,250}",  # Slack bot/user/app tokens
    r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}",  # Slack incoming webhook
    r"(?<![A-Za-z0-9_-])sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}",  # OpenAI, Anthropic
    r"(?<![A-Za-z0-9])(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,250}",  # Stripe
    r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])",  # Google API key
    r"(?<![A-Za-z0-9_-])glpat-[A-Za-z0-9_-]{20,}",  # GitLab personal access token
    r"(?<![A-Za-z0-9_-])hf_[A-Za-z0-9]{30,}",  # Hugging Face token
    r"(?<![A-Za-z0-9_-])npm_[A-Za-z0-9]{36}",  # npm token
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT (header.payload.sig)
))
# OCR miscounts the five dashes of PEM markers ("---BEGIN RSA PRIVATE KEY--"): two or more are accepted
_PRIVATE_KEY_BEGIN = re.compile(r"-{2,}[ \t]*BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)[ \t]*-{2,}")
_KEY_BODY_LINE = re.compile(r"\n[ \t]*(?:[A-Za-z0-9+/=]{8,}|[A-Za-z-]+: .*|)[ \t]*(?=\n|$)")
# A value after a word like key/token/secret: "API_KEY=...", "token: ...", "Authorization: Bearer ..."
_KEY_LABELLED = re.compile(
    r"(?i)(?<![a-z])(?:api[_ -]?key|apikey|access[_ -]?key(?:[_ -]?id)?|secret(?:[_ -]?(?:access[_ -]?)?key)?"
    r"|client[_ -]?secret|token|auth(?:orization)?|bearer|credentials?|private[_ -]?key|signing[_ -]?key"
    r"|session[_ -]?(?:id|key)|webhook[_ -]?secret|key)[\"']?[ \t]*(?::=|=>|[:=])?[ \t]*(?:\n[ \t]*)?"
    r"(?:bearer[ \t]+|token[ \t]+|basic[ \t]+)?"
    r"[\"']?(?P<value>[A-Za-z0-9+/_.~=-]{16,512})")


def _private_keys(text: str) -> Iterator[Finding]:
    for begin in _PRIVATE_KEY_BEGIN.finditer(text):
        end_marker = re.compile(rf"-{{2,}}[ \t]*END {re.escape(begin.group(1))}[ \t]*-{{2,}}")
        if (marker := end_marker.search(text, begin.end())) is not None:
            yield Finding("key", begin.start(), marker.end())
            continue
        end = begin.end()  # cut off on screen: the base64 (and header) lines that follow
        while (line := _KEY_BODY_LINE.match(text, end)) is not None and line.end() > end:
            end = line.end()
            if not line.group().strip():
                nxt = _KEY_BODY_LINE.match(text, end)
                if nxt is None or not nxt.group().strip():
                    break
        yield Finding("key", begin.start(), end)


_PATH = re.compile(r"^(?:~?/|\.\.?/)|/.*\.[A-Za-z]{1,5}$")  # /usr/share/x, src/plugins/edwards25519.c
_PART = re.compile(r"[^_.\-/]+")


def _looks_random(value: str) -> bool:
    """A token rather than a word, path, version or identifier: mixed characters, high entropy, and not
    mostly words joined by separators ("user_id_2024_backup")."""
    if _PATH.search(value):
        return False
    parts = _PART.findall(value)
    words = [part for part in parts if part.isalpha() and len(part) >= 3]
    if len(words) * 2 >= len(parts) > 1 and len(value) - sum(map(len, words)) < 16:
        return False  # but "django-insecure-<40 random characters>" is a key
    has_digit = any(ch.isdigit() for ch in value)
    has_upper, has_lower = any(ch.isupper() for ch in value), any(ch.islower() for ch in value)
    mixed = has_digit and (has_upper or has_lower) or (has_upper and has_lower and len(value) >= 20)
    return mixed and _entropy(value) >= 3.0


# A line break inside a token: a terminal wrapping a long key at its last column, read by OCR as two
# lines. Joined when the line before is at least WRAPPED_LINE characters long (a full line) and the next
# starts with 8 or more token characters (the rest of a key, not a word).
_TOKEN_BREAK = re.compile(r"(?<=[A-Za-z0-9_+/=.-])\n(?=[A-Za-z0-9_+/=.-]{8})")
WRAPPED_LINE = 40


class _Unwrapped:
    """`text` with the line breaks inside wrapped tokens removed, and the way back to `text`'s positions."""

    def __init__(self, text: str) -> None:
        self.breaks = [m.start() for m in _TOKEN_BREAK.finditer(text)
                       if m.start() - text.rfind("\n", 0, m.start()) - 1 >= WRAPPED_LINE]
        self.text = "".join(text[a + 1:b] for a, b in zip([-1, *self.breaks], [*self.breaks, len(text)]))

    def findings(self, kind: str, start: int, end: int) -> Iterator[Finding]:
        """A span of the joined text as findings in the original, one per line it covers (so the redacted
        text keeps its lines)."""
        first, last = self._original(start), self._original(end - 1) + 1
        position = first
        for b in self.breaks:
            if first < b < last:
                yield Finding(kind, position, b)
                position = b + 1
        yield Finding(kind, position, last)

    def _original(self, index: int) -> int:
        """The position in the original text of the joined text's `index`."""
        for i, b in enumerate(self.breaks):
            if index < b - i:
                return index + i
        return index + len(self.breaks)


@functools.lru_cache(maxsize=2)
def _unwrapped(text: str) -> _Unwrapped:
    """`_Unwrapped(text)`, built once per text for the detectors that read it (`find` runs them in turn)."""
    return _Unwrapped(text)


def _keys(text: str) -> Iterator[Finding]:
    yield from _private_keys(text)
    joined = _unwrapped(text)
    for pattern in _KEY_PATTERNS:
        for m in pattern.finditer(joined.text):
            yield from joined.findings("key", m.start(), m.end())


def _labelled_keys(text: str) -> Iterator[Finding]:
    joined = _unwrapped(text)
    for m in _KEY_LABELLED.finditer(joined.text):
        value = m.group("value").rstrip(".")
        if _looks_random(value):
            yield from joined.findings("key", m.start("value"), m.start("value") + len(value))


_PASSWORD = re.compile(
    r"(?i)(?<![a-z])(?P<label>[a-z_]*pass(?:word|wd|phrase|wort)|(?:[a-z]*_)?pass|pwd|pw|pin|kennwort|mot de passe"
    r"|contrase[ñn]a)"
    r"(?![a-z])[\"']?(?P<gap>[ \t]*(?::=|=>|[:=]|\bis\b:?)?[ \t]*)"
    r"(?P<value>\"[^\"\n]{1,128}\"?|'[^'\n]{1,128}'?|[^\s\"',;]{1,128})")  # OCR may drop a closing quote
_PASSWORD_BELOW = re.compile(r"(?im)^[ \t]*(?:new |current |confirm )?(?:password|passwort|kennwort|passphrase"
                             r"|mot de passe|contrase[ñn]a)[ \t]*:?[ \t]*\n[ \t]*(?P<value>\S{3,128})[ \t]*$")
_NOT_SECRETS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "none", "nil", "required", "optional",
                          "empty", "hidden", "masked", "n/a", "unset"})
_NOT_A_VALUE = re.compile(r"^(?:~?/|\.\.?/)|[:=]$")  # a path, or the next label
_SETTING = re.compile(r"^[A-Za-z_-]+[=:]")
_MASKED = re.compile(r"^[*•●·]+$")
_HTML_PASSWORD = re.compile(r"(?i)<input\b[^>]*\btype=[\"']?password\b[^>]*\bvalue=[\"'](?P<value>[^\"'\n]{1,128})[\"']")
_URL_PASSWORD = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{0,64}:(?P<value>[^\s:@/]{1,128})@")


def _password_like(value: str, strict: bool = False) -> bool:
    """A bare word after "password" is prose ("the password manager"); a secret has a digit, a symbol or
    inner capitals ("hunter2", "S3cr3t!", "correctHorse"). `strict` (no ':' or '=' before it): the
    punctuation of prose ("and/or", "don't", "well-known") does not count as a symbol."""
    symbols = [ch for ch in value if not ch.isalnum() and not (strict and ch in "/-'")]
    return len(value) >= 4 and (any(ch.isdigit() for ch in value) or bool(symbols)
                                or any(ch.isupper() for ch in value[1:]))


_CODE_VALUE = re.compile(r"[()\[\]]")
# "passwd + suffix", "passwd = acct = ''" (OCR may drop the '' at the end of the line)
_CODE_AFTER = re.compile(r"[ \t]+(?:[-+*/%]|=(?!=))(?:[ \t]|$)", re.M)


def _is_code(text: str, m: re.Match[str], value: str) -> bool:
    """A password label in source code: the value is an expression (a call, an index), the expression goes
    on ("passwd + suffix", "a = b = c"), or the label is an attribute and the value a plain name."""
    if _CODE_VALUE.search(value) or _CODE_AFTER.match(text, m.end()):
        return True
    attribute = m.start() > 0 and text[m.start() - 1] == "."
    return attribute and value.isidentifier()


def _passwords(text: str) -> Iterator[Finding]:
    for m in _PASSWORD.finditer(text):
        label, gap, value = m.group("label").lower(), m.group("gap").strip().lower(), m.group("value")
        quoted = value[0] in "\"'"
        bare = value.strip("\"'")
        if not bare or _MASKED.match(bare) or bare in _PLACEHOLDERS or bare.lower() in _NOT_SECRETS:
            continue  # nothing shown, redacted already, or a setting ("pin: true")
        strong_sep = gap in (":", "=", ":=", "=>", "is:")
        if not quoted and (len(bare) < 3 or _NOT_A_VALUE.match(bare) or (not strong_sep and _SETTING.match(bare))):
            continue  # "PWD=/home/ana" is the shell's working directory; 'type=password value="..."' another setting
        if not quoted and _is_code(text, m, bare):
            continue  # "pwd = os.getcwd()", "passwd = passwd + suffix", "self.password = password"
        if label in ("pw", "pwd", "pin") or label.endswith("pass"):
            if not strong_sep or (label == "pin" and not (bare.isdigit() and 4 <= len(bare) <= 8)):
                continue  # "pass the test", "pin the version", "pin = 13"
        if not strong_sep and (not m.group("gap") or not (quoted or _password_like(bare.rstrip(".,;:!?)"), strict=True))):
            continue  # "password-protected", "the password is stored"
        if gap == ":" and not quoted and bare.isalpha() and bare.islower() and _prose_follows(text, m.end()):
            continue  # "Password: must be at least 12 characters"
        start = m.start("value") + (1 if quoted else 0)
        yield Finding("password", start, start + len(bare))
    for m in (*_URL_PASSWORD.finditer(text), *_HTML_PASSWORD.finditer(text)):
        if m.group("value") not in _PLACEHOLDERS:
            yield Finding("password", m.start("value"), m.end("value"))
    for m in _PASSWORD_BELOW.finditer(text):  # a form OCR'd as two lines; a word below is the next label
        value = m.group("value")
        if value not in _PLACEHOLDERS and not _MASKED.match(value) and _password_like(value):
            yield Finding("password", m.start("value"), m.end("value"))


_PROSE_AFTER = re.compile(r" [a-z]{2,}\b")


def _prose_follows(text: str, end: int) -> bool:
    return _PROSE_AFTER.match(text, end) is not None


# In priority order: when two findings overlap, the earlier detector wins (then the longer finding).
DETECTORS: tuple[Callable[[str], Iterator[Finding]], ...] = (
    _keys, _passwords, _emails, _ibans, _cards, _national_ids, _labelled_keys, _phones)


def find(text: str) -> list[Finding]:
    """Every PII/secret span in `text`, non-overlapping, in text order."""
    candidates = [(rank, f) for rank, detect in enumerate(DETECTORS) for f in detect(text) if f.end > f.start]
    candidates.sort(key=lambda c: (c[0], c[1].start - c[1].end, c[1].start))
    starts: list[int] = []  # the taken findings, kept sorted by start (they never overlap)
    taken: list[Finding] = []
    for _, finding in candidates:
        i = bisect.bisect_right(starts, finding.start)
        if (i == 0 or taken[i - 1].end <= finding.start) and (i == len(taken) or finding.end <= starts[i]):
            starts.insert(i, finding.start)
            taken.insert(i, finding)
    return taken


def redact(text: str) -> Redacted:
    """`text` with each finding replaced by `[kind]` (spans in the findings refer to the original text)."""
    findings = find(text)
    parts, position = [], 0
    for f in findings:
        parts += [text[position:f.start], f"[{f.kind}]"]
        position = f.end
    parts.append(text[position:])
    return Redacted("".join(parts), tuple(findings))

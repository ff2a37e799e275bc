"""PII redaction (runtime.screen.redact) on the labelled set in pii_cases.py, and `edge-ai redact` as a user runs it."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pii_cases import CASES, ORDINARY, Case, iban, luhn_number

from runtime.screen.redact import KINDS, Finding, find, redact

EDGE_AI = [sys.executable, "-m", "edge_ai"]


def _covering(findings: list[Finding] | tuple[Finding, ...], text: str, secret: str) -> list[str]:
    """The kinds of the findings that cover every occurrence of `secret` in `text` entirely."""
    start = text.index(secret)
    return [f.kind for f in findings if f.start <= start and f.end >= start + len(secret)]


def test_the_set_has_ten_cases_per_kind_in_several_formats() -> None:
    per_kind = Counter(c.kind for c in CASES)
    assert set(per_kind) == set(KINDS)
    assert min(per_kind.values()) >= 10, per_kind
    assert len({(c.kind, c.fmt) for c in CASES}) == len(CASES)  # every case of a kind is its own format
    assert sum(len(p.split()) for p in ORDINARY) >= 3000


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}: {c.fmt}" for c in CASES])
def test_each_kind_is_caught_in_each_format(case: Case) -> None:
    result = redact(case.text)
    for secret in case.secrets:
        kinds = _covering(result.findings, case.text, secret)
        assert kinds == [case.kind], (secret, [(f.kind, case.text[f.start:f.end]) for f in result.findings])
        assert secret not in result.text
    assert f"[{case.kind}]" in result.text


@pytest.mark.parametrize("paragraph", range(len(ORDINARY)))
def test_no_false_positive_in_ordinary_text(paragraph: int) -> None:
    text = ORDINARY[paragraph]
    found = [(f.kind, text[f.start:f.end]) for f in find(text)]
    assert found == []
    assert redact(text).text == text


def test_spans_refer_to_the_original_text_and_rebuild_the_redacted_text() -> None:
    text = "\n".join(c.text for c in CASES)
    result = redact(text)
    rebuilt, position = [], 0
    for f in result.findings:
        assert position <= f.start < f.end  # in order, not overlapping
        rebuilt += [text[position:f.start], f"[{f.kind}]"]
        position = f.end
    rebuilt.append(text[position:])
    assert "".join(rebuilt) == result.text
    assert sum(len(c.secrets) for c in CASES) <= len(result.findings)


def test_redacted_text_has_nothing_left_to_redact() -> None:
    for case in CASES:
        assert redact(redact(case.text).text).findings == (), case.fmt


def test_numbers_with_a_wrong_check_digit_are_left_alone() -> None:
    card = luhn_number("4", 16)
    bad_card = card[:-1] + str((int(card[-1]) + 1) % 10)
    good_iban = iban("DE", "370400440532013000")
    bad_iban = good_iban[:2] + f"{(int(good_iban[2:4]) + 1) % 100:02d}" + good_iban[4:]
    for text in (f"card {bad_card[:4]} {bad_card[4:8]} {bad_card[8:12]} {bad_card[12:]}", f"IBAN {bad_iban}",
                 "SSN 000-12-3456", "DNI 12345678A", "Codice fiscale RSSMRA85T10A562A"):
        assert find(text) == [], text
    assert [f.kind for f in find(f"card {card}")] == ["card"]


def test_numbers_shaped_like_ordinary_ones_need_their_label() -> None:
    assert find("BSN 111222333") == [Finding("national_id", 4, 13)]
    assert find("reference 111222333") == []
    assert [f.kind for f in find("PESEL: 44051401359")] == ["national_id"]
    assert find("row 44051401359") == []
    assert [f.kind for f in find("mobile: 0612345678")] == ["phone"]
    assert [f.kind for f in find("tel. 555-0132")] == ["phone"]
    assert find("batch 0612345678") == []
    assert find("Phone: 2024-05-17\ncall 2024 05 17\nphone 3.14159265\nM 12 345 678 901") == []


def test_passwords_need_a_value_that_is_not_prose() -> None:
    assert find("The password is stored hashed, never in plain text.") == []
    assert find("Use a password manager; password-protected files are skipped.") == []
    assert [f.kind for f in find("the password is Hunter2!")] == ["password"]
    assert find("pin: true\npassword_required: yes\npass: false\nint pin = 13;\nbypass=1") == []
    assert find("PWD=/work/app\nOLDPWD=~/src\n<input type=password value=...>\nthe password is: X") == []
    assert find("Password\n********\nPassword\nForgot password?") == []
    assert [f.kind for f in find("cvs -d :pserver:anoncvs@cvs.example.org:/src co binutils")] == ["email"]
    text = "password=abc def"
    assert [text[f.start:f.end] for f in find(text)] == ["abc"]


def test_values_after_key_words_must_look_random() -> None:
    assert find("Primary key: user_id_2024_backup\ntoken: the next word\nkey = /usr/share/keyrings/ubuntu") == []
    text = "session token: 7f3c2a9e-5b1d-4e8f-a6c0-93d2b7e41f05"
    assert [(f.kind, text[f.start:f.end]) for f in find(text)] == [("key", "7f3c2a9e-5b1d-4e8f-a6c0-93d2b7e41f05")]


def test_text_as_ocr_reads_it_off_the_screen_is_still_redacted() -> None:
    """What bench_redact --ocr found leaking: the misreads and line breaks OCR puts into screen text."""
    jwt_head = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6Ik"
    wrapped = f"curl -s https://api.example.com/v1 -H 'Authorization: Bearer {jwt_head}\n" \
              "pvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c'\nnext command"
    assert redact(wrapped).text == "curl -s https://api.example.com/v1 -H 'Authorization: Bearer [key]\n[key]'\nnext command"
    pem = "---BEGIN RSA PRIVATE KEY--\nMIIEowIBAAKCAQEAr3ZxQ9vZbL5f\n---END RSA PRIVATE KEY---\nafter"
    assert redact(pem).text == "[key]\nafter"
    assert redact('DB_PASSWORD="correct horse battery staple\nnext').text == 'DB_PASSWORD="[password]\nnext'
    norwegian = iban("NO", "86011117947")
    assert redact(f"IBAN: N0{norwegian[2:]}").text == "IBAN: [iban]"  # the letter O read as a zero
    assert find("userid = passwd = acct =\npw = pw[:-1]") == []  # the '' was lost, it is still code
    prose = ("This paragraph is long enough to be a wrapped line of a terminal and\n"
             "configuration files are described on the next line of the page.")
    assert find(prose) == []  # a long line ending in a word, then a long word: not a key


def test_empty_and_clean_text_pass_through() -> None:
    assert redact("").text == "" and redact("").findings == ()
    assert redact("Nothing private here.\n").text == "Nothing private here.\n"


# ---------------------------------------------------------------- CLI


def edge_ai(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_AI, *args], input=stdin, capture_output=True, text=True, timeout=60,
                          env=os.environ.copy())


def _sample() -> str:
    return "\n".join(c.text for c in CASES[::7]) + "\n"


def test_cli_redacts_stdin_to_stdout() -> None:
    text = _sample()
    expected = redact(text).text
    for args in ((), ("-",)):
        result = edge_ai("redact", *args, stdin=text)
        assert result.returncode == 0 and result.stderr == ""
        assert result.stdout == expected


def test_cli_redacts_a_file_and_prints_findings_as_json(tmp_path: Path) -> None:
    text = _sample()
    source = tmp_path / "screen.txt"
    source.write_text(text, encoding="utf-8")
    plain = edge_ai("redact", str(source))
    assert plain.returncode == 0 and plain.stdout == redact(text).text
    data = json.loads(edge_ai("redact", "--json", str(source)).stdout)
    assert data["text"] == plain.stdout
    kinds = [f["kind"] for f in data["findings"]]
    assert set(kinds) == {c.kind for c in CASES[::7]}
    assert data["counts"] == dict(sorted(Counter(kinds).items()))
    for f in data["findings"]:  # offsets into the original text; the values themselves are never printed
        assert text[f["start"]:f["end"]] not in plain.stdout


@pytest.mark.parametrize(("target", "code", "needle"), [("missing.txt", 3, "does not exist"), (".", 1, "is a folder")])
def test_cli_unreadable_input_is_one_line_error(tmp_path: Path, target: str, code: int, needle: str) -> None:
    result = edge_ai("redact", str(tmp_path / target))
    assert result.returncode == code and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr


def test_cli_bytes_that_are_not_utf8_do_not_hide_the_rest(tmp_path: Path) -> None:
    source = tmp_path / "dump.bin"
    source.write_bytes(b"\xff\xfe binary \x80 then mail jo@example.com\n")
    result = edge_ai("redact", str(source))
    assert result.returncode == 0 and "[email]" in result.stdout and "jo@example.com" not in result.stdout


def test_cli_without_input_from_a_terminal_says_what_to_do() -> None:
    primary, secondary = pty.openpty()  # stdin is a terminal: waiting for typed text would look like a hang
    try:
        result = subprocess.run([*EDGE_AI, "redact"], stdin=secondary, capture_output=True, text=True, timeout=60)
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: nothing to redact") and len(result.stderr.strip().splitlines()) == 1

"""`edge-ai redact [FILE|-]`: the screen's PII redaction on any text, for scripts and for checking what it catches.

    edge-ai redact notes.txt                  # the text with [email], [card], [key]... in place of what was found
    pbpaste | edge-ai redact | pbcopy
    edge-ai redact --json log.txt             # the redacted text and the findings (kind and span, never the value)

Thin: reads the text (stdin for - or no FILE), calls runtime.screen.redact, prints. Spans in --json are
character offsets into the original text. Bytes that are not UTF-8 become U+FFFD, so a stray binary
byte does not hide the rest of the text from redaction.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_ai.errors import EdgeAIError, NotFoundError


def _read(file: str | None) -> str:
    """The text of FILE, or stdin for '-' or no FILE (when something is piped in)."""
    if file is None or file == "-":
        if sys.stdin is None or (file is None and sys.stdin.isatty()):  # '-' from a terminal: typed, ended by Ctrl-D
            raise EdgeAIError("nothing to redact; pass a file, or pipe text in (edge-ai redact - < notes.txt)")
        return sys.stdin.buffer.read().decode("utf-8", errors="replace")
    path = Path(file).expanduser()
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError as exc:
        raise NotFoundError(f"{file} does not exist; give a text file, or - to read stdin") from exc
    except IsADirectoryError as exc:
        raise EdgeAIError(f"{file} is a folder; give a text file, or - to read stdin") from exc
    except OSError as exc:
        raise EdgeAIError(f"cannot read {file}: {exc.strerror}; check its permissions") from exc


def redact_cmd(
    file: Annotated[Optional[str], typer.Argument(help="text file to redact; '-' or omitted: read stdin")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the redacted text and the findings as JSON")] = False,
) -> None:
    """Replace emails, phone numbers, card numbers, IBANs, national IDs, API keys and passwords with [kind]."""
    from runtime.screen.redact import redact

    result = redact(_read(file))
    if as_json:
        findings = [{"kind": f.kind, "start": f.start, "end": f.end} for f in result.findings]
        counts = Counter(f.kind for f in result.findings)
        print(json.dumps({"text": result.text, "findings": findings, "counts": dict(sorted(counts.items()))},
                         ensure_ascii=False, indent=2))
        return
    sys.stdout.write(result.text)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add `redact` to the main `edge-ai` app."""
    app.command("redact")(redact_cmd)

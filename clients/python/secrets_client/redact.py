"""Masking resolved secret values in text an executor is about to log or show.

A value is masked as itself, line by line (each line of a multi-line value, such as a PEM key),
and in the encodings a value commonly takes on its way into a log: base64 (standard and URL-safe,
at every alignment within a longer encoded string), URL-encoding (%XX and +) and JSON string
escaping.

The shortest value (or line) masked is MIN_MASKED_LENGTH = 4 characters. Shorter strings are
left alone on purpose: masking "on", "1" or "{" would rewrite ordinary words and numbers all over
a log and, by the holes it leaves, tell a reader where the secret appeared; and a secret that
short is guessable whatever a redactor does. The same bound applies to each encoded form.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import Final

MIN_MASKED_LENGTH: Final = 4
MASK: Final = "[REDACTED]"


def _forms(value: str) -> set[str]:
    forms = {value}
    forms.update(line for line in value.splitlines() if line.strip())
    raw = value.encode("utf-8")
    for offset in range(3):
        tail = raw[offset:]
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(tail).decode()
            # Inside a longer base64 string, wherever the value starts, the 3-byte groups that
            # lie wholly inside it encode to exactly these characters for one of the offsets.
            forms.add(encoded[: 4 * (len(tail) // 3)])
            if offset == 0:
                forms.add(encoded)
    forms.add(urllib.parse.quote(value, safe=""))
    forms.add(urllib.parse.quote_plus(value, safe=""))
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    return {f for f in forms if len(f) >= MIN_MASKED_LENGTH}


class Redactor:
    def __init__(self, values: Iterable[str] = ()) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        for value in values:
            self._forms |= _forms(value)
        # Longest first, so a value is masked whole before any of its lines or parts.
        ordered = sorted(self._forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __len__(self) -> int:
        return len(self._forms)

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} forms)"

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks the Redactor's values in every record it passes, message,
    arguments and exception text alike. Attach it to the handlers that write logs out."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redactor.redact(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True

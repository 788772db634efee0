"""Reference templates: `{{KEY}}` inside workflow input strings (SPEC 2.3).

A string is parsed once into literal text and references; rendering then joins the literals
with the looked-up values. Rendering never rescans what it inserted, so a value holding
`{{OTHER}}` stays literal (single pass).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from service.domain.errors import ResourceExhausted
from service.domain.keys import KEY_PATTERN
from service.domain.limits import MAX_BRACES_PER_STRING

# Alternation order matters: an escaped `\{{` is consumed before a reference can start at its
# braces. Only spaces (not tabs or newlines) are allowed just inside the braces.
#
# Linear time on any input (checked with runs of `{{`, spaces, backslashes and key characters in
# tests/unit/test_linear_time.py). The only backtracking is over what follows one `{{`: spaces,
# a key of at most 256 characters, spaces. Such a stretch follows only the `{{` just before it,
# so no character is rescanned from more than one starting point.
_TOKEN_RE: Final = re.compile(r"\\\{\{|\{\{ *(" + KEY_PATTERN + r") *\}\}")
OPEN: Final = "{{"

# Which parsed templates are remembered: the same workflow inputs are resolved run after run,
# and a remembered one costs under 1 us instead of 5-10 us (more with many references). Only
# short strings with few references are kept, so that the memo is bounded in bytes whatever the
# callers send (F2): an entry (the string as key, its parts and references) takes at most about
# 3 KiB, with 4-byte characters, so about 3 MiB for all MEMO_ENTRIES (tests/unit/test_templates.py
# fills it with the largest entries it admits and measures). The former 4096 entries of up to
# 1024 characters could keep 125 MiB (31 KiB for a string with 200 references).
MEMO_ENTRIES: Final = 1024
MEMO_TEXT_CHARS: Final = 256
# Counted as occurrences of `{{`, which bound the references (each starts with its own `{{`).
MEMO_REFERENCES: Final = 4


@dataclass(frozen=True, slots=True)
class Reference:
    key: str
    # Offsets of the whole `{{ KEY }}` token in the original string.
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Template:
    """A string split into literal parts and references: parts[i] references[i] parts[i+1] ..."""

    parts: tuple[str, ...]
    references: tuple[Reference, ...]

    def render(self, lookup: Callable[[str], str]) -> str:
        out = [self.parts[0]]
        for ref, part in zip(self.references, self.parts[1:], strict=True):
            out.append(lookup(ref.key))
            out.append(part)
        return "".join(out)


@functools.lru_cache(maxsize=MEMO_ENTRIES)
def _parse_cached(text: str) -> Template | None:
    return _parse(text)


def parse(text: str) -> Template | None:
    """Parses `text`; None when it holds neither a reference nor an escape (nothing to change).

    Short templates are remembered (MEMO_*; a template holds no secret, only the text around
    references)."""
    if OPEN not in text:
        # Fast path: most input strings hold no braces at all.
        return None
    if len(text) <= MEMO_TEXT_CHARS and text.count(OPEN) <= MEMO_REFERENCES:
        return _parse_cached(text)
    if text.count(OPEN) > MAX_BRACES_PER_STRING:
        raise ResourceExhausted(f"an input string may hold at most {MAX_BRACES_PER_STRING} '{{{{'")
    return _parse(text)


def _parse(text: str) -> Template | None:
    parts: list[str] = []
    refs: list[Reference] = []
    current: list[str] = []
    pos = 0
    changed = False
    for match in _TOKEN_RE.finditer(text):
        current.append(text[pos : match.start()])
        key = match.group(1)
        if key is None:
            current.append(OPEN)  # `\{{` -> literal `{{`
        else:
            parts.append("".join(current))
            current = []
            refs.append(Reference(key, match.start(), match.end()))
        changed = True
        pos = match.end()
    if not changed:
        return None
    current.append(text[pos:])
    parts.append("".join(current))
    return Template(tuple(parts), tuple(refs))

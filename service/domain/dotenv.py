"""The `.env` parser for bulk import (SPEC 2.5). Pure, total: it never raises on any text.

Accepted, as python-dotenv and Node's dotenv do:
- `KEY=VALUE`, `export KEY=VALUE`, spaces around `=`; blank lines; full-line `#` comments;
- unquoted values end at whitespace followed by `#` (an inline comment) and are trimmed;
- 'single-quoted' and `backtick-quoted` values are literal; "double-quoted" values understand
  the escapes \\n \\t \\r \\" \\\\ (any other backslash stays as written); every quoted value may
  span several lines, and a comment may follow the closing quote;
- the last occurrence of a duplicate key wins, and the entry says which lines it overrode.

Where the references differ, this parser picks: single quotes are fully literal (Node; python-dotenv
also unescapes \\' and \\\\ there), `KEY=#x` is the value "#x" (python-dotenv; Node reads it as
empty), and keys follow this service's key rules, so `a.b` or `a-b` are reported as invalid keys.

Every line that cannot be used is reported with its number and a reason, and skipped. Neither a
reason nor anything else here ever contains a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from service.domain.keys import key_problem, value_problem
from service.domain.values import SecretValue

_HEAD: Final = re.compile(r"[ \t]*(?:export[ \t]+)?([^=\n]*?)[ \t]*=")
_INLINE_COMMENT: Final = re.compile(r"\s#")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
QUOTES: Final = "'\"`"


@dataclass(frozen=True, slots=True)
class DotenvEntry:
    key: str
    value: SecretValue
    # Where the used value starts (1-based).
    line: int
    # Earlier lines with the same key, which this one overrides.
    overrides: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DotenvProblem:
    line: int
    message: str


@dataclass(slots=True)
class DotenvResult:
    entries: list[DotenvEntry] = field(default_factory=list)
    problems: list[DotenvProblem] = field(default_factory=list)


def _unescape_double(content: str) -> str:
    out: list[str] = []
    i = 0
    n = len(content)
    while i < n:
        c = content[i]
        if c == "\\" and i + 1 < n and content[i + 1] in _ESCAPES:
            out.append(_ESCAPES[content[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _closing_quote(text: str, start: int, quote: str) -> int:
    """Index of the quote closing the one at `start`, or -1."""
    if quote != '"':
        return text.find(quote, start + 1)
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i
        else:
            i += 1
    return -1


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end == -1 else end


def parse_dotenv(text: str) -> DotenvResult:
    # Universal newlines, as python-dotenv reads files: a bare CR or CRLF ends a line.
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    result = DotenvResult()
    found: dict[str, DotenvEntry] = {}
    pos = 0
    line = 1
    n = len(text)
    while pos < n:
        eol = _line_end(text, pos)
        physical = text[pos:eol]
        stripped = physical.strip()
        next_pos, next_line = eol + 1, line + 1
        if not stripped or stripped.startswith("#"):
            pos, line = next_pos, next_line
            continue
        head = _HEAD.match(text, pos, eol)
        if head is None:
            result.problems.append(DotenvProblem(line, "missing '=' (expected KEY=VALUE)"))
            pos, line = next_pos, next_line
            continue
        key = head.group(1).strip()
        problem = key_problem(key)
        if problem:
            # The text before '=' is not quoted back: it may be a value pasted on the wrong line.
            result.problems.append(DotenvProblem(line, f"invalid key: {problem}"))
            pos, line = next_pos, next_line
            continue
        after_equals = head.end()
        rest = text[after_equals:eol]
        vpos = after_equals + len(rest) - len(rest.lstrip(" \t"))
        quote = text[vpos] if vpos < eol else ""
        if quote and quote in QUOTES:
            close = _closing_quote(text, vpos, quote)
            if close == -1:
                result.problems.append(DotenvProblem(line, f"unterminated {_QUOTE_NAMES[quote]} quote"))
                pos, line = next_pos, next_line
                continue
            content = text[vpos + 1 : close]
            end = _line_end(text, close + 1)
            tail = text[close + 1 : end].strip()
            next_pos = end + 1
            next_line = line + text.count("\n", pos, end) + 1
            if tail and not tail.startswith("#"):
                result.problems.append(DotenvProblem(line, "unexpected text after the closing quote"))
                pos, line = next_pos, next_line
                continue
            value = _unescape_double(content) if quote == '"' else content
        else:
            # From just after '=', so that `KEY= # note` is an empty value with a comment.
            value = physical[after_equals - pos :]
            comment = _INLINE_COMMENT.search(value)
            if comment:
                value = value[: comment.start()]
            value = value.strip()
        problem = value_problem(value)
        if problem:
            result.problems.append(DotenvProblem(line, problem))
        else:
            earlier = found.get(key)
            overrides = (*earlier.overrides, earlier.line) if earlier else ()
            if earlier:
                del found[key]  # re-inserted below, so entries keep the order of their used line
            found[key] = DotenvEntry(key, SecretValue(value), line, overrides)
        pos, line = next_pos, next_line
    result.entries = list(found.values())
    return result


_QUOTE_NAMES: Final = {"'": "single", '"': "double", "`": "backtick"}


def render_dotenv(entries: Iterable[tuple[str, str]]) -> str:
    """Renders key/value pairs as `.env` text that parse_dotenv reads back exactly."""
    lines = []
    for key, value in entries:
        escaped = (
            value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
        )
        lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"

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
from service.domain.limits import MAX_REPORTED_PROBLEMS
from service.domain.values import SecretValue

# Linear time on any input (security finding 1): the text is scanned with str.find, str.split
# and strip, never with a pattern that can backtrack over a caller's run of spaces, tabs,
# quotes or backslashes. The one regex left, `\s#`, has a fixed width of two characters.
_INLINE_COMMENT: Final = re.compile(r"\s#")
_EXPORT: Final = "export"
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
    # Problem lines beyond MAX_REPORTED_PROBLEMS: counted, and summed up in one last problem.
    unlisted_problems: int = 0
    first_unlisted_line: int = 0

    def problem(self, line: int, message: str) -> None:
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(DotenvProblem(line, message))
            return
        if not self.unlisted_problems:
            self.first_unlisted_line = line
        self.unlisted_problems += 1


def _head(line: str) -> tuple[str, int] | None:
    """The key of `line` (not yet checked) and the index just past its first '='; None when the
    line has no '='.

    Reads `[ \\t]*(export[ \\t]+)?KEY=` with KEY everything up to the first '=', stripped."""
    equals = line.find("=")
    if equals == -1:
        return None
    before = line[:equals].lstrip(" \t")
    if before.startswith(_EXPORT):
        after_export = before[len(_EXPORT) :]
        rest = after_export.lstrip(" \t")
        if len(rest) < len(after_export):  # `export` then at least one space or tab
            before = rest
    return before.strip(), equals + 1


def _unescape_double(content: str) -> str:
    r"""Reads the escapes \n \t \r \" \\ of a double-quoted value; any other backslash stays.

    Scanning left to right, a backslash takes the character after it. Splitting at `\\` pairs
    them the same way (str.split also goes left to right and does not overlap), so each backslash
    left inside a piece stands alone and escapes the character after it."""
    if "\\" not in content:
        return content
    return "\\".join(
        piece.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r").replace('\\"', '"')
        for piece in content.split("\\\\")
    )


def _closing_quote(text: str, start: int, quote: str) -> int:
    """Index of the quote closing the one at `start`, or -1.

    Single and backtick quotes close at the next same quote. In a double-quoted value a
    backslash takes the character after it, so a `"` closes only after an even run of
    backslashes. Every position `i` the loop starts from is one the scan reaches on its own (not
    as the character after a backslash), and so is the start of the run of backslashes just
    before the `"` found, which makes counting that run within text[i:close] exact. Each
    character is looked at a bounded number of times: linear, whatever the runs.

    An unterminated quote scans to the end of the text, but at most once per kind of quote: the
    opening quote of any later value follows '=', a space or a tab, never a backslash, so that
    scan would have closed there."""
    if quote != '"':
        return text.find(quote, start + 1)
    i = start + 1
    while True:
        close = text.find('"', i)
        if close == -1:
            return -1
        between = text[i:close]
        if (len(between) - len(between.rstrip("\\"))) % 2 == 0:
            return close
        i = close + 1


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end == -1 else end


def parse_dotenv(text: str) -> DotenvResult:
    # Universal newlines, as python-dotenv reads files: a bare CR or CRLF ends a line.
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    result = DotenvResult()
    # key -> (value, line); re-inserted on a duplicate, so entries keep the order of their used line.
    found: dict[str, tuple[SecretValue, int]] = {}
    # key -> the earlier lines it overrides. A list appended to, not a tuple rebuilt per
    # duplicate: a file of N lines `A=1` would otherwise copy 1 + 2 + ... + N line numbers.
    overridden: dict[str, list[int]] = {}
    pos = 0
    line = 1
    n = len(text)
    while pos < n:
        eol = text.find("\n", pos)
        if eol == -1:
            eol = n
        physical = text[pos:eol]
        stripped = physical.strip()
        next_pos, next_line = eol + 1, line + 1
        if not stripped or stripped.startswith("#"):
            pos, line = next_pos, next_line
            continue
        head = _head(physical)
        if head is None:
            result.problem(line, "missing '=' (expected KEY=VALUE)")
            pos, line = next_pos, next_line
            continue
        key, equals_end = head
        problem = key_problem(key)
        if problem:
            # The text before '=' is not quoted back: it may be a value pasted on the wrong line.
            result.problem(line, f"invalid key: {problem}")
            pos, line = next_pos, next_line
            continue
        rest = physical[equals_end:]
        vpos = pos + equals_end + len(rest) - len(rest.lstrip(" \t"))
        quote = text[vpos] if vpos < eol else ""
        if quote and quote in QUOTES:
            close = _closing_quote(text, vpos, quote)
            if close == -1:
                result.problem(line, f"unterminated {_QUOTE_NAMES[quote]} quote")
                pos, line = next_pos, next_line
                continue
            content = text[vpos + 1 : close]
            end = _line_end(text, close + 1)
            tail = text[close + 1 : end].strip()
            next_pos = end + 1
            next_line = line + text.count("\n", pos, end) + 1
            if tail and not tail.startswith("#"):
                result.problem(line, "unexpected text after the closing quote")
                pos, line = next_pos, next_line
                continue
            value = _unescape_double(content) if quote == '"' else content
        else:
            # From just after '=', so that `KEY= # note` is an empty value with a comment.
            value = rest
            comment = _INLINE_COMMENT.search(value)
            if comment:
                value = value[: comment.start()]
            value = value.strip()
        problem = value_problem(value)
        if problem:
            result.problem(line, problem)
        else:
            earlier = found.pop(key, None)
            if earlier is not None:
                overridden.setdefault(key, []).append(earlier[1])
            found[key] = (SecretValue(value), line)
        pos, line = next_pos, next_line
    result.entries = [
        DotenvEntry(key, value, used, tuple(overridden.get(key, ()))) for key, (value, used) in found.items()
    ]
    if result.unlisted_problems:
        result.problems.append(
            DotenvProblem(
                result.first_unlisted_line,
                f"this line and {result.unlisted_problems - 1} later ones could not be used either; "
                f"only the first {MAX_REPORTED_PROBLEMS} problem lines are listed one by one",
            )
        )
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

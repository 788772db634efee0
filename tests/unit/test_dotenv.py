"""The .env parser: table-driven cases, properties, and a differential test against python-dotenv."""

from __future__ import annotations

import io
import re

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.domain.dotenv import _closing_quote, _head, _unescape_double, parse_dotenv, render_dotenv
from service.domain.keys import value_problem


def values(text: str) -> dict[str, str]:
    return {e.key: e.value.reveal() for e in parse_dotenv(text).entries}


def problems(text: str) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in parse_dotenv(text).problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1", {"A": "1"}),
        ("export A=1", {"A": "1"}),
        ("  export   A  =  1  ", {"A": "1"}),
        ("export=1", {"export": "1"}),
        ("A = spaced value  ", {"A": "spaced value"}),
        ("A=value # comment", {"A": "value"}),
        ("A=value\t# comment", {"A": "value"}),
        ("A=val#ue", {"A": "val#ue"}),
        ("A=#not-a-comment", {"A": "#not-a-comment"}),
        ("A=x #one #two", {"A": "x"}),
        ("A=url?x=1&y=2", {"A": "url?x=1&y=2"}),
        ("A='single # kept'  # comment", {"A": "single # kept"}),
        ("A='lit\\n\\t'", {"A": "lit\\n\\t"}),
        ('A="tab\\tnew\\nquote\\"slash\\\\"', {"A": 'tab\tnew\nquote"slash\\'}),
        ('A="unknown \\x escape"', {"A": "unknown \\x escape"}),
        ('A="line1\nline2"\nB=2', {"A": "line1\nline2", "B": "2"}),
        ("A='multi\nline'", {"A": "multi\nline"}),
        ("A=`back'tick\"`", {"A": "back'tick\""}),
        ("A=`multi\nline`", {"A": "multi\nline"}),
        ('A="x" # after', {"A": "x"}),
        ("# comment\n\n   \nA=1\n#B=2", {"A": "1"}),
        ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
        ("\ufeffA=1", {"A": "1"}),
        ("A=1\nA=2\nA=3", {"A": "3"}),
        ("A=1=2", {"A": "1=2"}),
        ("export\tA=1", {"A": "1"}),
        ("\t export \t A \t= 1", {"A": "1"}),
        ("exportA=1", {"exportA": "1"}),
        ("export_A=1", {"export_A": "1"}),
        ("\x0bA\x0c=1", {"A": "1"}),
        ('A="a\\\\" # the quote after an even run of backslashes closes', {"A": "a\\"}),
        ('A="a\\\\\\"b"', {"A": 'a\\"b'}),
        ('A="\\\\n\\\\\\n"', {"A": "\\n\\\n"}),
    ],
)
def test_parses(text: str, expected: dict[str, str]) -> None:
    assert values(text) == expected
    assert problems(text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("JUSTAKEY", [(1, "missing '=' (expected KEY=VALUE)")]),
        ("export KEY", [(1, "missing '=' (expected KEY=VALUE)")]),
        ("export =1", [(1, "invalid key: key is empty")]),
        (
            "export\x0cA=1",
            [(1, "invalid key: key may only contain letters A-Z and a-z, digits 0-9 and underscore (_)")],
        ),
        ("export A B=1", [(1, "invalid key: key may only contain letters A-Z and a-z, digits 0-9 and underscore (_)")]),
        ("bad-key=1", [(1, "invalid key: key may only contain letters A-Z and a-z, digits 0-9 and underscore (_)")]),
        ("=value", [(1, "invalid key: key is empty")]),
        ("A=", [(1, "value is empty")]),
        ('A=""', [(1, "value is empty")]),
        ("A=   # only a comment", [(1, "value is empty")]),
        ("A= #x", [(1, "value is empty")]),
        ('A="never closed\nB=2', [(1, "unterminated double quote")]),
        ("A='open", [(1, "unterminated single quote")]),
        ('A="x" trailing', [(1, "unexpected text after the closing quote")]),
    ],
)
def test_reports_problems_by_line(text: str, expected: list[tuple[int, str]]) -> None:
    assert problems(text) == expected


def test_unterminated_quote_skips_only_its_line() -> None:
    result = parse_dotenv('OK1=1\nBAD="open\nOK2=2\n')
    assert [(p.line, p.message) for p in result.problems] == [(2, "unterminated double quote")]
    assert values('OK1=1\nBAD="open\nOK2=2\n') == {"OK1": "1", "OK2": "2"}


def test_line_numbers_count_multiline_values() -> None:
    result = parse_dotenv('A="1\n2\n3"\nB=x\nbad line\n')
    assert [(e.key, e.line) for e in result.entries] == [("A", 1), ("B", 4)]
    assert [p.line for p in result.problems] == [5]


def test_duplicates_last_wins_and_say_which_lines_they_override() -> None:
    result = parse_dotenv("A=1\nB=x\nA=2\nA=3\n")
    assert [(e.key, e.value.reveal(), e.line, e.overrides) for e in result.entries] == [
        ("B", "x", 2, ()),
        ("A", "3", 4, (1, 3)),
    ]


def test_problems_never_echo_values() -> None:
    canary = "CANARY_9f3b"
    text = "\n".join(
        [
            f"{canary}",  # no '='
            f"bad key {canary}=x",
            f'B="{canary}" {canary}',
            f"C={canary * 7000}",  # too large
            f'A="{canary}',  # unterminated (last: an open quote runs on to the next quote)
        ]
    )
    result = parse_dotenv(text)
    assert len(result.problems) == 5
    assert all(canary not in p.message for p in result.problems)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
@example("A='\\")
@example('A="\\')
@example("\r\r\n=\n")
def test_never_raises_on_any_text(text: str) -> None:
    result = parse_dotenv(text)
    for entry in result.entries:
        assert value_problem(entry.value.reveal()) is None
    for problem in result.problems:
        assert problem.line >= 1


# The scanners in their obvious forms: the backtracking pattern the parser used before security
# finding 1 (quadratic, cubic after leading blanks, so only short lines here) and one character at
# a time. The parser's linear forms must read every input exactly as they do.
_HEAD_REFERENCE = re.compile(r"[ \t]*(?:export[ \t]+)?([^=\n]*?)[ \t]*=")


def head_reference(line: str) -> tuple[str, int] | None:
    match = _HEAD_REFERENCE.match(line)
    return None if match is None else (match.group(1).strip(), match.end())


def unescape_reference(content: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
    out, i = [], 0
    while i < len(content):
        if content[i] == "\\" and i + 1 < len(content) and content[i + 1] in escapes:
            out.append(escapes[content[i + 1]])
            i += 2
        else:
            out.append(content[i])
            i += 1
    return "".join(out)


def closing_double_quote_reference(text: str, start: int) -> int:
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i
        else:
            i += 1
    return -1


head_lines = st.lists(
    st.sampled_from(["=", " ", "\t", "export", "export ", "x", "A", "_", "-", "#", '"', "\x0b", "\xa0", "\u3000"]),
    max_size=12,
).map("".join)
backslashed = st.lists(st.sampled_from(["\\", '"', "n", "t", "r", "x", "'", "\n", "\\\\", '\\"']), max_size=30).map(
    "".join
)


@settings(max_examples=1000)
@given(head_lines)
@example("  export \t A \t = 1")
@example("export=")
@example("export \t=")
def test_head_reads_lines_as_the_backtracking_pattern_did(line: str) -> None:
    assert _head(line) == head_reference(line)


@settings(max_examples=1000)
@given(backslashed)
@example("\\\\\\n")
@example("\\")
def test_unescape_reads_as_a_left_to_right_scan(content: str) -> None:
    assert _unescape_double(content) == unescape_reference(content)


@settings(max_examples=1000)
@given(backslashed)
@example('\\\\\\""')
def test_closing_double_quote_as_a_left_to_right_scan(rest: str) -> None:
    text = '"' + rest
    assert _closing_quote(text, 0, '"') == closing_double_quote_reference(text, 0)


keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
any_values = st.text(min_size=1, max_size=200).filter(lambda v: value_problem(v) is None)


@settings(max_examples=300)
@given(st.dictionaries(keys, any_values, max_size=20))
def test_render_then_parse_gives_the_same_entries(data: dict[str, str]) -> None:
    assert values(render_dotenv(data.items())) == data
    assert problems(render_dotenv(data.items())) == []


# The subset of .env both parsers must read alike: valid keys, no empty values, single quotes
# without backslashes, double quotes with only the escapes both understand, no ${...} (which
# python-dotenv would interpolate by default; it is turned off below anyway).
plain_char = st.characters(codec="utf-8", exclude_characters="\r\n\\'\"`#$\x00", exclude_categories=["Cs", "Zl", "Zp"])
plain = st.text(plain_char, min_size=1, max_size=30).map(str.strip).filter(bool)
single = st.text(
    st.characters(codec="utf-8", exclude_characters="'\\\x00\r", exclude_categories=["Cs"]), min_size=1, max_size=30
)
double_piece = st.one_of(
    st.text(
        st.characters(codec="utf-8", exclude_characters='"\\\x00\r', exclude_categories=["Cs"]), min_size=1, max_size=10
    ),
    st.sampled_from(["\\n", "\\t", '\\"', "\\\\"]),
)
double = st.lists(double_piece, min_size=1, max_size=5).map("".join)


@st.composite
def env_lines(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["plain", "single", "double", "comment", "blank"]))
        key = draw(keys)
        export = draw(st.sampled_from(["", "export "]))
        eq = draw(st.sampled_from(["=", " = ", "= ", " ="]))
        comment = draw(st.sampled_from(["", " # note", "  #x"]))
        if kind == "plain":
            lines.append(f"{export}{key}{eq}{draw(plain)}{comment}")
        elif kind == "single":
            lines.append(f"{export}{key}{eq}'{draw(single)}'{comment}")
        elif kind == "double":
            lines.append(f'{export}{key}{eq}"{draw(double)}"{comment}')
        elif kind == "comment":
            lines.append("# " + draw(plain))
        else:
            lines.append("")
    return "\n".join(lines) + "\n"


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(env_lines())
def test_agrees_with_python_dotenv_on_the_common_subset(text: str) -> None:
    ours = values(text)
    theirs = dotenv_values(stream=io.StringIO(text), interpolate=False)
    # Values python-dotenv cannot use (it gives None) we must report as problems, and vice versa.
    assert ours == {k: v for k, v in theirs.items() if v}
    assert problems(text) == []


def test_problem_lines_past_the_listed_maximum_are_counted_in_one_closing_problem() -> None:
    from service.domain.limits import MAX_REPORTED_PROBLEMS

    text = "bad line\n" * (MAX_REPORTED_PROBLEMS + 500) + "GOOD=1\n"
    result = parse_dotenv(text)
    assert len(result.problems) == MAX_REPORTED_PROBLEMS + 1
    last = result.problems[-1]
    assert last.line == MAX_REPORTED_PROBLEMS + 1
    assert "499 later ones" in last.message
    assert [e.key for e in result.entries] == ["GOOD"]

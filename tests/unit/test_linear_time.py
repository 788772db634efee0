"""Both parsers of caller text run in linear time on any input (security finding 1 and its class).

Each case is a pathological input built at two sizes, 10^5 and 10^6 characters: the large one
must parse within a generous bound, and take not much more than ten times the small one (a
quadratic parser takes a hundred times as long, and seconds to minutes at 10^6). Times are CPU
times of this process, so other work on the machine does not make the test flaky.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from service.domain import templates
from service.domain.dotenv import parse_dotenv

SMALL = 100_000
LARGE = 1_000_000
BOUND_SECONDS = 2.0
# Ten times the input may take at most this many times as long; 100 would be quadratic.
MAX_RATIO = 30
# Below this, times are too small for their ratio to mean anything.
NOISE_SECONDS = 0.05


def cycle(unit: str, prefix: str = "", suffix: str = "") -> Callable[[int], str]:
    """Builds prefix + unit repeated + suffix, about n characters in all."""
    return lambda n: prefix + unit * max(1, (n - len(prefix) - len(suffix)) // len(unit)) + suffix


DOTENV_CASES: dict[str, Callable[[int], str]] = {
    # Lines without '=' (the finding: quadratic, and cubic with leading blanks or `export`).
    "spaces": cycle(" ", prefix="a"),
    "tabs": cycle("\t", prefix="a"),
    "leading-spaces": cycle(" ", suffix="a"),
    "export-then-spaces": cycle(" ", prefix="export"),
    "export-repeated": cycle("export "),
    "export-repeated-then-equals": cycle("export ", suffix="=1"),
    "spaces-then-equals": cycle(" ", prefix="a", suffix="=1"),
    "equals": cycle("="),
    # Unquoted values.
    "value-spaces": cycle(" ", prefix="A="),
    "value-spaces-then-text": cycle(" ", prefix="A=", suffix="x"),
    "value-space-hash": cycle(" #", prefix="A="),
    "value-hashes": cycle("#", prefix="A=x"),
    "value-backslashes": cycle("\\", prefix="A="),
    # Quotes of each kind, runs of them, escapes, unterminated.
    "double-quotes": cycle('"', prefix="A="),
    "single-quotes": cycle("'", prefix="A="),
    "backticks": cycle("`", prefix="A="),
    "quotes-no-equals": cycle('"', suffix="="),
    "double-backslashes-unterminated": cycle("\\", prefix='A="'),
    "double-backslashes-closed": cycle("\\", prefix='A="', suffix='"'),
    "double-escaped-quotes-unterminated": cycle('\\"', prefix='A="'),
    "double-escaped-quotes-closed": cycle('\\"', prefix='A="', suffix='"'),
    "double-escapes": cycle("\\n", prefix='A="', suffix='"'),
    "double-unterminated-long": cycle("x", prefix='A="'),
    "single-unterminated-long": cycle("x", prefix="A='"),
    "backtick-unterminated-long": cycle("x", prefix="A=`"),
    "unterminated-then-lines": cycle("B=1\n", prefix="A=\"x\nC=`y\nD='z\n"),
    "quote-per-line": cycle('A="\n'),
    "escaped-quote-per-line": cycle('A="\\"\n'),
    "closed-then-spaces": cycle(" ", prefix='A="x"', suffix="tail"),
    # Many lines.
    "newlines": cycle("\n"),
    "carriage-returns": cycle("\r"),
    "crlf": cycle("\r\n"),
    "comments": cycle("#\n"),
    "empty-keys": cycle("=\n"),
    "duplicate-keys": cycle("A=1\n"),  # each duplicate used to copy all the earlier line numbers
    "distinct-keys": lambda n: "".join(f"K{i}=v\n" for i in range(n // 8)),
}

TEMPLATE_CASES: dict[str, Callable[[int], str]] = {
    "opens": cycle("{{"),
    "open-space": cycle("{{ "),
    "open-then-spaces": cycle(" ", prefix="{{"),
    "open-key-then-spaces": cycle(" ", prefix="{{K"),
    "escaped-opens": cycle("\\{{"),
    "backslashes": cycle("\\", suffix="{{"),
    "braces": cycle("{"),
    "closes": cycle("}}", suffix="{{"),
    "references": cycle("{{ K }}"),
    "open-long-key": cycle("K", prefix="{{"),
    "opens-too-long-keys": cycle("{{" + "K" * 300),
    "opens-keys-then-spaces": cycle("{{" + "K" * 256 + " " * 50),
    "open-key-spaces-no-close": cycle("{{ K " + " " * 100),
}


def cpu_seconds(parse: Callable[[str], object], text: str) -> float:
    started = time.process_time()
    parse(text)
    return time.process_time() - started


def assert_linear(parse: Callable[[str], object], make: Callable[[int], str]) -> None:
    small = cpu_seconds(parse, make(SMALL))
    large_text = make(LARGE)
    large = cpu_seconds(parse, large_text)
    assert large < BOUND_SECONDS, f"{large:.2f} s for {len(large_text)} characters"
    assert large < max(MAX_RATIO * small, NOISE_SECONDS), f"{large:.3f} s at 10^6 but {small:.4f} s at 10^5"


@pytest.mark.parametrize("make", DOTENV_CASES.values(), ids=DOTENV_CASES.keys())
def test_dotenv_parse_is_linear(make: Callable[[int], str]) -> None:
    assert_linear(parse_dotenv, make)


@pytest.mark.parametrize("make", TEMPLATE_CASES.values(), ids=TEMPLATE_CASES.keys())
def test_template_parse_is_linear(make: Callable[[int], str]) -> None:
    # The parser itself (templates.parse adds a cap on `{{` per string in front of it).
    assert_linear(templates._parse, make)


def test_a_string_with_more_braces_than_the_cap_is_refused_before_parsing() -> None:
    from service.domain.errors import ResourceExhausted
    from service.domain.limits import MAX_BRACES_PER_STRING

    assert templates.parse("\\{{" * MAX_BRACES_PER_STRING) is not None
    with pytest.raises(ResourceExhausted):
        templates.parse("\\{{" * (MAX_BRACES_PER_STRING + 1))

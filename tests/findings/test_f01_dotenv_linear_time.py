"""Finding 1: the `.env` parser was quadratic in a run of spaces or tabs on a line without '='.

The key pattern `[ \\t]*(?:export[ \\t]+)?([^=\\n]*?)[ \\t]*=` retried its trailing `[ \\t]*` at
every position of the lazy key group, so `"a" + " " * 240_000` (240 kB, well inside an import's
size limit) held the event loop for about a minute; after leading blanks or `export ` it was
cubic (4,000 spaces: 23 s). The parser now scans with str.find and strip (linear on any input:
tests/unit/test_linear_time.py).

The bound here is generous: it flags quadratic behaviour, it is not a benchmark (the fixed parser
takes milliseconds). Times are CPU times of this process, so other work on the machine does not
make the test flaky.
"""

from __future__ import annotations

import time

import pytest

from service.domain.dotenv import parse_dotenv

BOUND_SECONDS = 2.0
N = 240_000


@pytest.mark.parametrize(
    "text",
    [
        "a" + " " * N,
        "a" + "\t" * N,
        "export" + " " * N,
        "export a" + " \t" * (N // 2),
        " " * N + "a",
        ("a" + " " * N + "\n") * 2,
    ],
    ids=["spaces", "tabs", "export-spaces", "export-mixed", "leading-spaces", "two-lines"],
)
def test_f01_a_line_without_equals_is_parsed_in_linear_time(text: str) -> None:
    started = time.process_time()
    result = parse_dotenv(text)
    elapsed = time.process_time() - started
    assert elapsed < BOUND_SECONDS, f"{elapsed:.2f} s for {len(text)} characters"
    assert result.entries == []
    lines = [n for n, line in enumerate(text.split("\n"), 1) if line]
    assert [(p.line, p.message) for p in result.problems] == [(n, "missing '=' (expected KEY=VALUE)") for n in lines]


def test_f01_same_class_a_key_repeated_on_every_line_is_parsed_in_linear_time() -> None:
    # Each duplicate rebuilt the tuple of all the lines it overrides: 32,000 lines `A=1` (128 kB)
    # took 5 s, and a 4 MiB import of them would take over an hour.
    lines = N // 4
    started = time.process_time()
    result = parse_dotenv("A=1\n" * lines)
    elapsed = time.process_time() - started
    assert elapsed < BOUND_SECONDS, f"{elapsed:.2f} s for {lines} lines"
    [entry] = result.entries
    assert (entry.line, entry.overrides) == (lines, tuple(range(1, lines)))

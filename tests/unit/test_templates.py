"""Reference templates (SPEC 2.3) as pure string rules."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import pytest

from service.domain import templates
from service.domain.templates import parse

VALUES = {"KEY": "v", "TOKEN": "t0k", "A": "1", "B": "2", "LOOP": "{{KEY}}"}


def render(text: str) -> str:
    template = parse(text)
    return text if template is None else template.render(VALUES.__getitem__)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{KEY}}", "v"),
        ("Bearer {{TOKEN}}", "Bearer t0k"),
        ("{{ KEY }}", "v"),
        ("{{   KEY}}", "v"),
        ("{{A}}{{B}}", "12"),
        ("a={{A}}, b={{ B }}.", "a=1, b=2."),
        ("no braces", "no braces"),
        ("{{}}", "{{}}"),
        ("{{ }}", "{{ }}"),
        ("{{not-a-key}}", "{{not-a-key}}"),
        ("{{KEY.sub}}", "{{KEY.sub}}"),
        ("{{KEY}", "{{KEY}"),
        ("{KEY}}", "{KEY}}"),
        ("{{\tKEY}}", "{{\tKEY}}"),
        ("{{{KEY}}}", "{v}"),
        ("\\{{KEY}}", "{{KEY}}"),
        ("\\{{ not a ref", "{{ not a ref"),
        ("x \\{{A}} {{A}}", "x {{A}} 1"),
        ("{{LOOP}}", "{{KEY}}"),
    ],
)
def test_render(text: str, expected: str) -> None:
    assert render(text) == expected


def test_strings_without_references_or_escapes_parse_to_none() -> None:
    assert parse("plain") is None
    assert parse("{{bad key}}") is None


def test_reference_offsets_and_keys_in_order() -> None:
    template = parse("{{A}} and {{ B }}")
    assert template is not None
    assert [(r.key, r.start, r.end) for r in template.references] == [("A", 0, 5), ("B", 10, 17)]


def test_key_longer_than_256_characters_is_not_a_reference() -> None:
    long_key = "K" * 257
    assert parse("{{" + long_key + "}}") is None
    ok = parse("{{" + "K" * 256 + "}}")
    assert ok is not None and ok.references[0].key == "K" * 256


def test_keys_are_case_sensitive() -> None:
    template = parse("{{key}} {{KEY}}")
    assert template is not None
    assert [r.key for r in template.references] == ["key", "KEY"]


def test_long_templates_and_many_references_parse_alike_remembered_or_not() -> None:
    short = "Bearer {{TOKEN}}"
    long = "x" * templates.MEMO_TEXT_CHARS + "{{A}}"
    many = "{{A}}" * (templates.MEMO_REFERENCES + 1)
    for text in (short, long, many):
        assert parse(text) == templates._parse(text)
        assert parse(text) == parse(text)
    assert render(many) == "1" * (templates.MEMO_REFERENCES + 1)


def test_the_memo_of_parsed_templates_is_bounded_in_bytes() -> None:
    """F2 for this memo: filled with the largest entries it admits (4-byte characters, as many
    references as it takes), it holds its stated bound."""
    wide = "\U0001f600"
    shapes: dict[str, Callable[[str], str]] = {
        "long keys": lambda tag: wide + tag + "".join("{{" + chr(65 + j) * 57 + "}}" + wide for j in range(4)),
        "wide parts": lambda tag: tag + "".join(wide * 43 + "{{K" + str(10 + j) + "}}" for j in range(4)) + wide * 40,
        "one reference": lambda tag: tag + wide * 245 + "{{A}}" + wide,
        "escapes": lambda tag: tag + (wide * 58 + "\\{{") * 4 + wide * 4,
    }
    for shape, make in shapes.items():
        templates._parse_cached.cache_clear()
        gc.collect()
        tracemalloc.start()
        try:
            for i in range(templates.MEMO_ENTRIES + 10):
                text = make(f"{i:05d}")
                assert len(text) <= templates.MEMO_TEXT_CHARS
                assert text.count(templates.OPEN) <= templates.MEMO_REFERENCES
                assert parse(text) is not None
            kept = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
            templates._parse_cached.cache_clear()
        assert kept < 3.5 * 2**20, f"{shape}: {kept / 2**20:.2f} MiB"

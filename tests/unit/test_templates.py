"""Reference templates (SPEC 2.3) as pure string rules."""

from __future__ import annotations

import pytest

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

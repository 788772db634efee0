"""The client's Redactor and its template copy."""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse

from hypothesis import given, settings
from hypothesis import strategies as st
from secrets_client import MIN_MASKED_LENGTH, RedactingFilter, Redactor
from secrets_client import templates as client_templates
from secrets_client.redact import MASK

from service.domain import templates as server_templates

VALUE = 'pa55:word/with+odd=chars&more"quotes"'


def test_masks_value_and_its_encodings_at_any_alignment() -> None:
    r = Redactor([VALUE])
    for prefix in ("", "x", "xy", "xyz"):
        for text in (
            f"header {prefix}{VALUE} end",
            base64.b64encode((prefix + VALUE + "tail").encode()).decode(),
            base64.urlsafe_b64encode((prefix + VALUE).encode()).decode(),
            f"https://h/?q={urllib.parse.quote(VALUE, safe='')}",
            f"q={urllib.parse.quote_plus(VALUE)}",
            json.dumps({"k": prefix + VALUE}),
        ):
            redacted = r.redact(text)
            assert MASK in redacted, text
            assert VALUE not in redacted
            assert base64.b64encode(VALUE.encode()).decode()[:-4] not in redacted


def test_each_line_of_a_multi_line_value_is_masked() -> None:
    pem = "-----BEGIN KEY-----\nMIIEabcdefgh\nijklmnop1234\n-----END KEY-----"
    r = Redactor([pem])
    logged = "line one: MIIEabcdefgh\nline two: ijklmnop1234"
    assert "MIIEabcdefgh" not in r.redact(logged) and "ijklmnop1234" not in r.redact(logged)
    assert r.redact(pem) == MASK


def test_values_shorter_than_the_minimum_are_left_alone() -> None:
    assert MIN_MASKED_LENGTH == 4
    r = Redactor(["abc", "abcd"])
    assert r.redact("abc xabcdx") == f"abc x{MASK}x"


def test_logging_filter_masks_message_arguments_and_exceptions() -> None:
    secret = "tok-1234567890"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(Redactor([secret])))
    log = logging.getLogger("redact-test")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("calling with %s", secret)
        log.warning(f"inline {secret}")
        try:
            raise ValueError(f"bad token {secret}")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert secret not in out
    assert out.count(MASK) == 3 and "ValueError" in out


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("{} \\AB_x-.")), max_size=40))
def test_client_template_syntax_matches_the_server(text: str) -> None:
    server = server_templates.parse(text)
    client = client_templates.split(text)
    if server is None:
        assert client is None
    else:
        assert client == (list(server.parts), [r.key for r in server.references])


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from(["A", "B"]), min_size=1, max_size=4),
    st.lists(st.text(max_size=5), min_size=5, max_size=5),
    st.text(min_size=1, max_size=8),
)
def test_values_are_recovered_from_a_resolved_string(keys: list[str], parts: list[str], value: str) -> None:
    parts = [p.replace("{", "(").replace("\\", "/") for p in parts]
    template = parts[0] + "".join("{{" + k + "}}" + parts[i + 1] for i, k in enumerate(keys))
    values = {"A": value, "B": "b-value"}
    resolved = parts[0] + "".join(values[k] + parts[i + 1] for i, k in enumerate(keys))
    known = {"B": "b-value"}
    found = client_templates.extract_values(template, resolved, known)
    if "A" in keys:
        assert found == {"A": value}
    else:
        assert found == {}

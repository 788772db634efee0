"""The client's Redactor, built from where the service says each value is (shared vectors)."""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from secrets_client import MIN_MASKED_LENGTH, RedactingFilter, Redactor, resolution_from_response
from secrets_client.gen.secrets.v1 import common_pb2 as cpb
from secrets_client.gen.secrets.v1 import resolver_pb2 as rpb
from secrets_client.redact import MASK

from service.api.inputs import walk_blocks
from service.api.resolver import _ResponseWriter
from service.app.resolver import KeyOutcome
from service.app.runs import _render
from service.domain.model import Scope
from service.domain.resolution import Candidate, Decision
from service.domain.values import SecretValue
from service.gen.secrets.v1 import resolver_pb2 as spb

VECTORS = Path(__file__).resolve().parents[2] / "clients" / "testdata" / "redaction_vectors.json"

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


def vectors() -> list[dict[str, Any]]:
    return list(json.loads(VECTORS.read_text(encoding="utf-8"))["cases"])


def response_for(case: dict[str, Any]) -> rpb.ResolveInputsResponse:
    """The ResolveInputsResponse a service sends for a vector case (one block, "b")."""
    inputs = struct_pb2.Struct()
    inputs.update(case["resolved"])
    references = [
        rpb.ResolvedReference(
            field_path=r["field_path"],
            key=r["key"],
            scope=cpb.SCOPE_WORKSPACE,
            version=1,
            start=r["start"],
            end=r["end"],
        )
        for r in case["references"]
    ]
    return rpb.ResolveInputsResponse(
        run_user_id="u", blocks=[rpb.BlockResult(block_id="b", inputs=inputs, references=references)]
    )


def test_vectors_agree_with_the_library_constants() -> None:
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert document["mask"] == MASK and document["min_masked_length"] == MIN_MASKED_LENGTH
    assert len(document["cases"]) >= 10


@pytest.mark.parametrize("case", vectors(), ids=lambda c: c["name"])
def test_redactor_from_the_shared_vectors(case: dict[str, Any]) -> None:
    """What a client must do with a response (clients/testdata/redaction_vectors.json): cut each
    value where the references say it is, and mask it in every form."""
    resolution = resolution_from_response(response_for(case))
    block = resolution.blocks["b"]
    assert block.inputs == case["resolved"]
    assert [(r.field_path, r.key, r.start, r.end) for r in block.references] == [
        (r["field_path"], r["key"], r["start"], r["end"]) for r in case["references"]
    ]
    redactor = resolution.redactor()
    for item in case["redact"]:
        assert redactor.redact(item["text"]) == item["expected"], item["text"]


@pytest.mark.parametrize("case", vectors(), ids=lambda c: c["name"])
def test_the_service_renders_the_shared_vectors(case: dict[str, Any]) -> None:
    """The service's side of the same cases, without a database: its walk and render give the
    resolved inputs and the references (with offsets) the vectors expect."""
    rendered, references = render_on_the_service(case["inputs"], case["values"])
    assert rendered == case["resolved"]
    assert references == case["references"]


def render_on_the_service(
    inputs: dict[str, Any], values: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    outcomes = {
        key: KeyOutcome(Decision(key, Candidate(Scope.WORKSPACE, key, 1), None), SecretValue(value))
        for key, value in values.items()
    }
    response = spb.ResolveInputsResponse()
    result = response.blocks.add(block_id="b")
    result.inputs.update(inputs)
    walk = walk_blocks([("b", result.inputs)])
    texts = {key: o.value.reveal() for key, o in outcomes.items() if o.value is not None}
    writer = _ResponseWriter(response, walk)
    writer.add_references(0, _render(walk.sites[0], outcomes, texts, writer))
    references = [{"field_path": r.field_path, "key": r.key, "start": r.start, "end": r.end} for r in result.references]
    return json_format.MessageToDict(result.inputs), references


# Text with references, escapes, braces and non-ASCII around them; values likewise.
_TEXT = st.text(alphabet=st.sampled_from(list("{} \\x-é\U0001f511\n")), max_size=12)
_VALUE = st.text(alphabet=st.sampled_from(list("{}\\ab-é\U0001f511\n")), min_size=1, max_size=10)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(_TEXT, st.sampled_from(["A", "B", " A ", "C"])), max_size=4),
    _TEXT,
    st.fixed_dictionaries({"A": _VALUE, "B": _VALUE, "C": _VALUE}),
)
def test_every_value_is_cut_exactly_where_the_service_put_it(
    pieces: list[tuple[str, str]], tail: str, values: dict[str, str]
) -> None:
    """Any number of references per string, escapes, values holding `{{` or `\\{{`, multi-line
    and non-ASCII values: the client cuts each value exactly, so the redactor gets them all."""
    text = "".join(f"{before}{{{{{key}}}}}" for before, key in pieces) + tail
    rendered, references = render_on_the_service({"s": text, "n": {"t": [text]}}, values)
    response = rpb.ResolveInputsResponse(
        blocks=[
            rpb.BlockResult(
                block_id="b",
                inputs=json_format.ParseDict(rendered, struct_pb2.Struct()),
                references=[rpb.ResolvedReference(scope=cpb.SCOPE_WORKSPACE, version=1, **r) for r in references],
            )
        ]
    )
    resolution = resolution_from_response(response)
    block = resolution.blocks["b"]
    assert block.inputs is not None
    strings = {"s": block.inputs["s"], "n.t[0]": block.inputs["n"]["t"][0]}
    for r in block.references:
        assert strings[r.field_path][r.start : r.end] == values[r.key]
    used = {r.key for r in block.references}
    assert sorted(resolution._values) == sorted({values[k] for k in used})

"""The Python client library against the real server."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from secrets_client import (
    DirectoryClient,
    EditorClient,
    ExecutorClient,
    InvalidArgument,
    NotFound,
    OpsClient,
    PermissionDenied,
    RedactingFilter,
    RevisionConflict,
    SecretsError,
    Unauthenticated,
    resolution_from_response,
)
from secrets_client.gen.secrets.v1 import resolver_pb2
from secrets_client.redact import MASK

from tests.api import uid
from tests.conftest import TOKENS, Server


@pytest.fixture
async def clients(server: Server):  # type: ignore[no-untyped-def]
    executor = ExecutorClient(server.address, TOKENS["executor"])
    editor = EditorClient(server.address, TOKENS["editor"])
    directory = DirectoryClient(server.address, TOKENS["directory"])
    ops = OpsClient(server.address, TOKENS["ops"])
    yield executor, editor, directory, ops
    for c in (executor, editor, directory, ops):
        await c.close()


async def test_executor_resolves_and_redacts_what_it_got(clients) -> None:  # type: ignore[no-untyped-def]
    executor, editor, directory, _ = clients
    ws, user = uid("ws"), uid("user")
    await directory.put_member(ws, user, f"{user}@example.com", "admin")
    pem = "-----BEGIN-----\nline-one-of-key\nline-two-of-key\n-----END-----"
    await editor.save(user, ws, expected_revision=0, set={"TOKEN": "tok-abcdef123", "PEM": pem})
    await editor.save(user, ws, scope="personal", expected_revision=0, set={"MINE": "personal-987"})

    resolution = await executor.resolve(
        ws,
        {
            "http": {"headers": {"Authorization": "Bearer {{TOKEN}}"}, "body": "{{PEM}}"},
            "two": {"joined": "{{MINE}}:{{TOKEN}}"},
            "broken": {"x": "{{NOPE}}"},
        },
        trigger="manual",
        triggering_user_id=user,
    )

    http, two, broken = resolution.blocks["http"], resolution.blocks["two"], resolution.blocks["broken"]
    assert http.ok and http.inputs == {"headers": {"Authorization": "Bearer tok-abcdef123"}, "body": pem}
    assert [(r.field_path, r.key, r.scope, r.version) for r in http.references] == [
        ("body", "PEM", "workspace", 1),
        ("headers.Authorization", "TOKEN", "workspace", 1),
    ]
    assert two.inputs == {"joined": "personal-987:tok-abcdef123"}
    assert not broken.ok and broken.error is not None and broken.error.code == "SECRET_NOT_FOUND"
    assert "tok-abcdef123" not in repr(resolution)

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(resolution.redactor()))
    log = logging.getLogger("executor-under-test")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.info("request %s", http.inputs)
        log.info("joined=%s", two.inputs)
        log.info("second line only: line-two-of-key")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    for secret in ("tok-abcdef123", "personal-987", "line-one-of-key", "line-two-of-key"):
        assert secret not in out
    assert out.count(MASK) >= 4


async def test_status_codes_become_typed_exceptions(clients, server: Server) -> None:  # type: ignore[no-untyped-def]
    _, editor, directory, _ = clients
    ws, user = uid("ws"), uid("user")
    await directory.put_member(ws, user, f"{user}@example.com", "admin")
    await editor.save(user, ws, expected_revision=0, set={"A": "value-a"})

    with pytest.raises(RevisionConflict) as conflict:
        await editor.save(user, ws, expected_revision=0, set={"B": "value-b"})
    assert conflict.value.current_revision == 1
    with pytest.raises(InvalidArgument) as invalid:
        await editor.save(user, ws, expected_revision=1, set={"bad key": "v", "OK": ""})
    assert [f for f, _ in invalid.value.violations] == ["changes[0].key", "changes[1].value"]
    with pytest.raises(NotFound):
        await editor.get_secret(user, ws, "MISSING")
    wrong_role = ExecutorClient(server.address, TOKENS["editor"])
    with pytest.raises(PermissionDenied):
        await wrong_role.resolve(ws, {}, triggering_user_id=user)
    await wrong_role.close()
    async with ExecutorClient(server.address, "not-a-token") as nobody:
        with pytest.raises(Unauthenticated):
            await nobody.resolve(ws, {}, triggering_user_id=user)
    assert "not-a-token" not in repr(nobody)


async def test_ops_client_pages_through_audit_events(clients) -> None:  # type: ignore[no-untyped-def]
    _, editor, directory, ops = clients
    ws, user = uid("ws"), uid("user")
    await directory.put_member(ws, user, f"{user}@example.com", "admin")
    for revision in range(5):
        await editor.save(user, ws, expected_revision=revision, set={"K": f"value-{revision}"})
    events = [e async for e in ops.audit_events(ws, page_size=2)]
    assert [e.action for e in events] == ["secrets.save"] * 5 + ["member.put"]
    status = await ops.key_status()
    assert status.primary_key_id == "k1"


VECTORS = Path(__file__).resolve().parents[2] / "clients" / "testdata" / "redaction_vectors.json"


@pytest.mark.parametrize("case", json.loads(VECTORS.read_text(encoding="utf-8"))["cases"], ids=lambda c: str(c["name"]))
async def test_shared_redaction_vectors_end_to_end(clients, case: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """clients/testdata/redaction_vectors.json through the server and this client: the resolved
    inputs, the references' offsets, and the redactor built from them."""
    executor, editor, directory, _ = clients
    ws, user = uid("ws"), uid("user")
    await directory.put_member(ws, user, f"{user}@example.com", "admin")
    await editor.save(user, ws, expected_revision=0, set=case["values"])
    resolution = await executor.resolve(ws, {"b": case["inputs"]}, triggering_user_id=user)
    block = resolution.blocks["b"]
    assert block.ok and block.inputs == case["resolved"]
    assert [
        {"field_path": r.field_path, "key": r.key, "start": r.start, "end": r.end} for r in block.references
    ] == case["references"]
    redactor = resolution.redactor()
    for item in case["redact"]:
        assert redactor.redact(item["text"]) == item["expected"], item["text"]


async def test_a_response_without_offsets_builds_no_redactor() -> None:
    """From a service that predates the offsets, the client refuses rather than guess."""
    reply = resolver_pb2.ResolveInputsResponse(
        blocks=[
            resolver_pb2.BlockResult(
                block_id="b",
                inputs=struct_pb2.Struct(fields={"a": struct_pb2.Value(string_value="user:pass-word")}),
                references=[resolver_pb2.ResolvedReference(field_path="a", key="USER", version=1)],
            )
        ]
    )
    with pytest.raises(SecretsError) as refused:
        resolution_from_response(reply)
    assert refused.value.code == grpc.StatusCode.UNIMPLEMENTED and "'USER'" in refused.value.message

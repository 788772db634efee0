"""Finding 4: an executor could keep resolves out of the audit log.

`execution_id` and `workflow_id` were not validated: a NUL made the batched COPY fail, and the
audit buffer dropped the whole batch (the poisoned call got its value; 15 of 20 honest resolves'
events went missing with its own), and a 3 MB execution_id was stored as it was. Now both ids are
checked at the edge, and a record the database refuses is cleaned and written on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import grpc
import pytest

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.store import repository as repo
from tests.api import ADMIN, Api, W, set_, status_of, struct, uid
from tests.conftest import Server, metadata


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("execution_id", "exec\x00poison"),
        ("execution_id", "x" * 3_000_000),
        ("execution_id", "line\nbreak"),
        ("workflow_id", "wf\x00"),
        ("workflow_id", "w" * 257),
    ],
)
async def test_f04_bad_execution_and_workflow_ids_are_refused_naming_the_field(
    channel: grpc.aio.Channel, field: str, value: str
) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("K", "v"))
    request = rpb.ResolveInputsRequest(
        workspace_id=ws,
        workflow_id="wf",
        execution_id="exec",
        trigger=common.TRIGGER_MANUAL,
        triggering_user_id=user,
        blocks=[common.BlockInputs(block_id="b", inputs=struct({"v": "{{K}}"}))],
    )
    setattr(request, field, value)
    err = await status_of(api.resolver.ResolveInputs(request, metadata=metadata("executor")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.details() or "")


async def test_f04_one_unwritable_event_does_not_cost_the_others_their_place(server: Server) -> None:
    audit = server.running.audit
    marker = uid("poison-batch")
    now = datetime.now(UTC)

    def event(execution_id: str) -> repo.AuditRecord:
        return repo.AuditRecord(
            principal="test",
            action="inputs.resolve",
            outcome="ok",
            workspace_id=marker,
            execution_id=execution_id,
            at=now,
        )

    for i in range(10):
        audit.add(event(f"honest-{i}"))
    audit.add(event("poison\x00"))  # what no edge check lets through any more: the buffer must cope anyway
    for i in range(10, 20):
        audit.add(event(f"honest-{i}"))
    await audit.flush()
    conn = await asyncpg.connect(server.running.db.url)
    try:
        rows = await conn.fetch("SELECT execution_id FROM audit_events WHERE workspace_id = $1", marker)
    finally:
        await conn.close()
    written = {r["execution_id"] for r in rows}
    assert {f"honest-{i}" for i in range(20)} <= written
    assert len(written) == 21  # the poisoned one too, with its NUL replaced

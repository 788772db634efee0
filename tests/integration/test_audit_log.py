"""Audit an investigator can use (issue 10 item 5): resolve events carry the trigger, workflow,
execution, keys used and keys failed (never values); DATA_LOSS and dry-run imports are audited;
ListAuditEvents filters by workspace, principal, user, key, action and time range, and pages stably
on (time, id) while events are written between pages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from google.protobuf import timestamp_pb2

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, Api, W, set_, status_of, struct, uid
from tests.conftest import Server, metadata
from tests.integration.test_paging import reencode, violations
from tests.integration.test_usage_trash_expiry import eventually, get


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(when)
    return t


async def events(api: Api, page_size: int = 100, **filters: object) -> list[opb.AuditEvent]:
    found: list[opb.AuditEvent] = []
    token = ""
    while True:
        reply = await api.ops.ListAuditEvents(
            opb.ListAuditEventsRequest(page_size=page_size, page_token=token, **filters),  # type: ignore[arg-type]
            metadata=metadata("ops"),
        )
        found.extend(reply.events)
        token = reply.next_page_token
        if not token:
            return found


async def test_a_resolve_event_names_trigger_workflow_execution_and_the_keys_used_and_failed(
    channel: grpc.aio.Channel,
) -> None:
    api = Api(channel)
    ws, user, owner = uid("ws"), uid("user"), uid("owner")
    await api.member(ws, user, READ)
    await api.member(ws, owner, ADMIN)
    await api.save(ws, owner, W, set_("API_TOKEN", "tok-value-1"), set_("HIDDEN", "hidden-value-1"))
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="HIDDEN", restricted=True),
        metadata=metadata("editor", owner),
    )
    reply = await api.resolver.ResolveInputs(
        rpb.ResolveInputsRequest(
            workspace_id=ws,
            workflow_id="wf-invoices",
            execution_id="exec-77",
            trigger=common.TRIGGER_SCHEDULE,
            workflow_owner_id=user,
            blocks=[
                common.BlockInputs(block_id="ok", inputs=struct({"h": "Bearer {{API_TOKEN}}"})),
                common.BlockInputs(block_id="bad", inputs=struct({"a": "{{NOPE}}", "b": "{{HIDDEN}}"})),
            ],
        ),
        metadata=metadata("executor"),
    )
    assert reply.blocks[1].HasField("error")
    [event] = await events(api, workspace_id=ws, action="inputs.resolve")
    assert (event.trigger, event.workflow_id, event.execution_id) == (common.TRIGGER_SCHEDULE, "wf-invoices", "exec-77")
    assert (event.principal, event.user_id, event.outcome) == ("test-executor", user, "1 block(s) failed")
    assert [(k.key, k.scope, k.version) for k in event.keys] == [("API_TOKEN", W, 1)]
    assert sorted((k.key, k.code) for k in event.failed_keys) == [
        ("HIDDEN", common.BLOCK_ERROR_CODE_SECRET_NOT_PERMITTED),
        ("NOPE", common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND),
    ]
    text = str(event)
    assert "tok-value-1" not in text and "hidden-value-1" not in text
    # Found by the key it failed on, and by the one it used.
    assert [e.id for e in await events(api, key="NOPE", workspace_id=ws)] == [event.id]
    assert event.id in [e.id for e in await events(api, key="API_TOKEN", workspace_id=ws)]


async def test_data_loss_and_dry_run_imports_are_audited(channel: grpc.aio.Channel, server: Server) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("BROKEN", "broken-value-1"), set_("FINE", "fine-value-1"))
    await api.store.ImportDotenv(
        spb.ImportDotenvRequest(workspace_id=ws, scope=W, content="NEW_ONE=x1y2z3\n", dry_run=True),
        metadata=metadata("editor", user),
    )
    conn = await asyncpg.connect(server.settings.database_url or "")
    try:
        sealed = bytearray(
            await conn.fetchval("SELECT sealed FROM secrets WHERE scope = 1 AND owner_id = $1 AND key = 'BROKEN'", ws)
        )
        sealed[-1] ^= 0x01
        await conn.execute("UPDATE secrets SET sealed = $2 WHERE owner_id = $1 AND key = 'BROKEN'", ws, bytes(sealed))
    finally:
        await conn.close()
    err = await status_of(api.resolve(ws, {"b": {"v": "{{BROKEN}} {{FINE}}"}}, user=user, execution_id="exec-dl"))
    assert err.code() == grpc.StatusCode.DATA_LOSS
    [lost] = await events(api, workspace_id=ws, action="inputs.resolve")
    assert (lost.outcome, lost.execution_id, lost.workflow_id) == ("data_loss", "exec-dl", "wf")
    assert [k.key for k in lost.failed_keys] == ["BROKEN"] and "'BROKEN'" in lost.detail
    assert "broken-value-1" not in str(lost)
    # The editor meeting the same value (an import comparing it) is audited as data_loss too.
    err = await status_of(
        api.store.ImportDotenv(
            spb.ImportDotenvRequest(workspace_id=ws, scope=W, content="BROKEN=abc\n", dry_run=True),
            metadata=metadata("editor", user),
        )
    )
    assert err.code() == grpc.StatusCode.DATA_LOSS
    imports = await events(api, workspace_id=ws, action="secrets.import")
    assert [(e.outcome, [k.key for k in e.failed_keys]) for e in imports] == [
        ("data_loss", ["BROKEN"]),
        ("dry_run", []),
    ]
    assert "1 would be written" in imports[1].detail


async def test_filters_combine_and_pages_stay_stable_while_events_arrive(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, other_ws, alice, bob = uid("ws"), uid("ws"), uid("alice"), uid("bob")
    for w in (ws, other_ws):
        await api.member(w, alice, ADMIN)
        await api.member(w, bob, ADMIN)
    before = datetime.now(UTC)
    for i in range(12):
        await api.save(ws, alice if i % 2 else bob, W, set_(f"K{i}", "v"))
    await api.save(other_ws, alice, W, set_("K1", "v"))
    await asyncio.sleep(0.01)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    for _ in range(3):
        await api.resolve(ws, {"b": {"v": "{{K1}}"}}, user=alice)
    after = datetime.now(UTC) + timedelta(seconds=1)

    saves = await events(api, workspace_id=ws, action="secrets.save")
    assert len(saves) == 12
    by_alice = await events(api, workspace_id=ws, user_id=alice)
    assert {e.action for e in by_alice} == {"secrets.save", "inputs.resolve", "member.put"}
    assert all(e.user_id == alice for e in by_alice)
    assert len([e for e in by_alice if e.action == "secrets.save"]) == 6
    executor = await events(api, workspace_id=ws, principal="test-executor")
    assert [e.action for e in executor] == ["inputs.resolve"] * 3
    k1 = await events(api, key="K1", workspace_id=ws)
    assert sorted(e.action for e in k1) == ["inputs.resolve"] * 3 + ["secrets.save"]
    assert len(await events(api, key="K1", user_id=alice)) == 5  # both workspaces
    early = await events(api, workspace_id=ws, start_time=ts(before), end_time=ts(middle))
    late = await events(api, workspace_id=ws, start_time=ts(middle), end_time=ts(after))
    assert len(early) == 12 and [e.action for e in late] == ["inputs.resolve"] * 3
    assert await events(api, workspace_id=ws, end_time=ts(before - timedelta(minutes=5))) == []

    # Pages of 5, with events written between pages: nothing listed twice, none of those that
    # existed at the start skipped, newest first throughout.
    first = [e.id for e in await events(api, workspace_id=ws)]
    seen: list[opb.AuditEvent] = []
    token = ""
    while True:
        reply = await api.ops.ListAuditEvents(
            opb.ListAuditEventsRequest(workspace_id=ws, page_size=5, page_token=token), metadata=metadata("ops")
        )
        seen.extend(reply.events)
        token = reply.next_page_token
        if not token:
            break
        await api.save(ws, bob, W, set_(f"LATE_{len(seen)}", "v"))
    ids = [e.id for e in seen]
    assert len(set(ids)) == len(ids) and set(first) <= set(ids)
    order = [(e.time.ToDatetime(), e.id) for e in seen]
    assert order == sorted(order, reverse=True)


async def test_bad_audit_requests_are_invalid_argument(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    for n in range(4):
        await api.member(ws, f"{user}-{n}", READ)
    ops = metadata("ops")
    page = await api.ops.ListAuditEvents(opb.ListAuditEventsRequest(workspace_id=ws, page_size=2), metadata=ops)
    assert page.next_page_token
    # The token continues its own listing only: other filters make it INVALID_ARGUMENT.
    for other in (
        opb.ListAuditEventsRequest(workspace_id=ws, action="member.put", page_token=page.next_page_token),
        opb.ListAuditEventsRequest(page_token=page.next_page_token),
        opb.ListAuditEventsRequest(workspace_id=ws, start_time=ts(datetime.now(UTC)), page_token=page.next_page_token),
    ):
        err = await status_of(api.ops.ListAuditEvents(other, metadata=ops))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["page_token"]
    # A forged cursor in the token's own format: an id or a time no event can have (F09: such
    # values once reached the query and failed INTERNAL).
    for index, value in ((4, 2**63), (4, 0), (4, -1), (3, 10**20), (3, -(10**20)), (3, "2024-01-01"), (4, True)):
        forged = reencode(page.next_page_token, {index: value})
        request = opb.ListAuditEventsRequest(workspace_id=ws, page_size=2, page_token=forged)
        err = await status_of(api.ops.ListAuditEvents(request, metadata=ops))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["page_token"], (index, value)
    now = datetime.now(UTC)
    cases = {
        "end_time": opb.ListAuditEventsRequest(start_time=ts(now), end_time=ts(now)),
        "key": opb.ListAuditEventsRequest(key="not a key"),
        "principal": opb.ListAuditEventsRequest(principal="x\n"),
    }
    for field, request in cases.items():
        err = await status_of(api.ops.ListAuditEvents(request, metadata=ops))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == [field], field
    huge = opb.ListAuditEventsRequest()
    huge.start_time.seconds = 2**62
    err = await status_of(api.ops.ListAuditEvents(huge, metadata=ops))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["start_time"]


async def test_identical_resolves_buffered_together_are_one_row_that_counts_them(
    channel: grpc.aio.Channel, server: Server
) -> None:
    """Issue 15: the same resolve repeated (same run, keys, versions, outcome) within one write of
    the buffer is one row with its count and the times of the first and last; resolves of another
    run, or with another outcome, stay rows of their own; usage counts every resolve."""
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("LOOPED", "looped-value-1"))
    blocks = {"b": {"h": "{{LOOPED}}"}}
    buffer = server.running.audit
    # Held, the buffer writes nothing: every resolve below is pending at once, as under load.
    async with buffer._writing:
        await asyncio.gather(*(api.resolve(ws, blocks, user=user, execution_id="exec-loop") for _ in range(12)))
        await api.resolve(ws, blocks, user=user, execution_id="exec-other")
        await api.resolve(ws, {"b": {"h": "{{MISSING}}"}}, user=user, execution_id="exec-loop")
    found = await events(api, workspace_id=ws, action="inputs.resolve")
    looped = [e for e in found if e.execution_id == "exec-loop" and e.outcome == "ok"]
    assert [e.count for e in looped] == [12]
    [row] = looped
    assert row.HasField("last_time") and row.last_time.ToDatetime() >= row.time.ToDatetime()
    # Found by the time of any of its events: from its last one on, and until just after its first.
    last, first = row.last_time.ToDatetime(tzinfo=UTC), row.time.ToDatetime(tzinfo=UTC)
    assert row.id in [e.id for e in await events(api, workspace_id=ws, start_time=ts(last))]
    assert row.id in [e.id for e in await events(api, workspace_id=ws, end_time=ts(first + timedelta(microseconds=1)))]
    others = [(e.execution_id, e.outcome, e.count, e.HasField("last_time")) for e in found if e is not row]
    assert sorted(others) == [("exec-loop", "1 block(s) failed", 1, False), ("exec-other", "ok", 1, False)]

    # Usage counts the resolves, not the rows (it is written after the audit batch).
    async def counted() -> bool:
        usage = (await get(api, ws, user, "LOOPED")).usage
        return [(u.workflow_id, u.uses_last_30_days) for u in usage] == [("wf", 13)]

    await eventually(counted)


async def test_time_ranges_at_the_ends_of_the_timestamp_range_list_without_error(channel: grpc.aio.Channel) -> None:
    """The start of a range reaches back MAX_REPEAT_SPAN for merged rows (at >= start - 1 s):
    at the first instant Timestamp allows, that is before year 1, and must not fail."""
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    first, last = (
        timestamp_pb2.Timestamp(seconds=-62_135_596_800),
        timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999),
    )
    listed = await events(api, workspace_id=ws, start_time=first, end_time=last)
    assert [e.action for e in listed] == ["member.put"]
    assert await events(api, workspace_id=ws, start_time=last) == []

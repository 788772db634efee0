"""Attack (issue 15, audit merging): resolves hidden from a time-range query of the audit log.

Identical resolve events pending in the audit buffer together are written as one row whose `at`
is the time of the FIRST of them (`last_at` the last). ListAuditEvents filters its time range on
`at` alone (service/store/audit_log.py list_events: `at >= start`, `at < end`), and retention
deletes on `at` alone. So a resolve that happened inside the range an investigator asks for is
not listed when an identical one, merged with it, happened before the range started.

How long events stay pending together is not bounded by the 50 ms interval: the buffer merges
for as long as a write is in flight (`AuditBuffer._writing` held: a slow COPY, a pool waiting
for a connection, up to the 30 s command timeout), and the window is unbounded in the code.

Reproduction: hold the buffer's write lock (as a write in flight does), resolve, wait, note the
time T, resolve the same run again, release. ListAuditEvents(start_time=T) lists nothing for
that run, although a resolve of it happened after T. Cause: service/app/audit.py AuditBuffer.add
/repeat merge across any span of time, and service/store/audit_log.py list_events filters on
the first event's time only.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc

from tests.api import ADMIN, Api, W, set_, uid
from tests.conftest import Server
from tests.integration.test_audit_log import events, ts


async def test_a_resolve_inside_the_asked_time_range_is_listed(channel: grpc.aio.Channel, server: Server) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("LOOPED", "looped-value-1"))
    blocks = {"b": {"h": "{{LOOPED}}"}}
    buffer = server.running.audit
    async with buffer._writing:  # a write in flight: nothing pending is written meanwhile
        await api.resolve(ws, blocks, user=user, execution_id="exec-span")
        await asyncio.sleep(1.0)
        start = datetime.now(UTC)
        await asyncio.sleep(0.2)
        await api.resolve(ws, blocks, user=user, execution_id="exec-span")  # after `start`
    listed = await events(api, workspace_id=ws, action="inputs.resolve", start_time=ts(start))
    assert [e for e in listed if e.execution_id == "exec-span"], (
        "a resolve that happened after start_time is missing from ListAuditEvents(start_time=...): "
        "it was merged into a row whose time is that of an earlier identical resolve"
    )

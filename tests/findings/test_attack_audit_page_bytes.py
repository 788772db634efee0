"""Attack: the audit log made unreadable by its own events.

A resolve event lists every key the resolve used, and a resolve may use 500 keys of up to 256
characters: one event is about 140 KB on the wire. ListAuditEvents paged by count only (50 by
default, 500 at most), so once an executor had made a few dozen such resolves the operator's
default call failed with gRPC's own `RESOURCE_EXHAUSTED: Sent message larger than max (6628733 vs.
4194304)`, and page_size=1000 built a 66 MB response (server RSS +200 MiB) before refusing it:
the newest events, the ones an operator looks for after an incident, could not be listed at all
without guessing a small page size.

Now a page also ends before its events pass a byte budget (at least one event a page), and
`next_page_token` continues from there.
"""

from __future__ import annotations

import grpc

from service.domain.limits import MAX_MESSAGE_BYTES
from service.gen.secrets.v1 import operations_pb2 as opb
from tests.api import ADMIN, Api, W, set_, uid
from tests.conftest import metadata

KEYS = [f"K{'x' * 250}{i:04d}" for i in range(500)]
RESOLVES = 40


async def test_audit_pages_stay_under_the_message_limit(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, *[set_(k, "v") for k in KEYS])
    template = " ".join(f"{{{{{k}}}}}" for k in KEYS)
    for _ in range(RESOLVES):
        await api.resolve(ws, {"b": {"v": template}}, user=user)

    for page_size in (0, 500):
        events: list[opb.AuditEvent] = []
        token = ""
        while True:
            reply = await api.ops.ListAuditEvents(
                opb.ListAuditEventsRequest(workspace_id=ws, page_size=page_size, page_token=token),
                metadata=metadata("ops"),
            )
            assert reply.ByteSize() <= MAX_MESSAGE_BYTES
            assert reply.events
            events.extend(reply.events)
            token = reply.next_page_token
            if not token:
                break
        resolves = [e for e in events if e.action == "inputs.resolve"]
        assert len(resolves) == RESOLVES
        assert all(len(e.keys) == len(KEYS) for e in resolves)
        assert len({e.id for e in events}) == len(events)

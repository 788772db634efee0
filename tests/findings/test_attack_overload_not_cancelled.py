"""Attack: thousands of concurrent calls, answered CANCELLED.

SECRETS_MAX_CALLS_IN_FLIGHT (gRPC's maximum_concurrent_rpcs) answers RESOURCE_EXHAUSTED past the
limit, but only for calls the server has taken from gRPC core. Core keeps its own backlog of calls
the application has not taken yet, and past `grpc.server.max_pending_requests` (1,000 by
default) it cancels them: 3,000 concurrent resolves on one channel got 496 CANCELLED and not one
RESOURCE_EXHAUSTED; 5,000 health checks, 876 CANCELLED; 20,000, 5,206 (a bare grpc.aio server
does the same). SPEC 3.1: overload is RESOURCE_EXHAUSTED, never cancellation.

Now the backlog is sized far past the calls in flight, so the excess reaches the limiter and is
refused in so many words.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.gen.secrets.v1 import resolver_pb2_grpc as rgrpc
from tests.api import ADMIN, Api, W, set_, struct, uid
from tests.conftest import Server, metadata


def _flood(address: str, health: int, resolves: int, ws: str, user: str) -> Counter[str]:
    """Starts every call before waiting for any (a plain channel's futures: no client-side queue)."""
    with grpc.insecure_channel(address) as ch:
        check = health_pb2_grpc.HealthStub(ch).Check
        resolve = rgrpc.ResolverStub(ch).ResolveInputs
        request = rpb.ResolveInputsRequest(
            workspace_id=ws,
            trigger=common.TRIGGER_MANUAL,
            triggering_user_id=user,
            blocks=[common.BlockInputs(block_id="b", inputs=struct({"v": "{{K}}"}))],
        )
        calls = [check.future(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(health)]
        calls += [resolve.future(request, metadata=metadata("executor"), timeout=60) for _ in range(resolves)]
        codes: Counter[str] = Counter()
        for call in calls:
            try:
                call.result()
                codes["OK"] += 1
            except grpc.RpcError as err:
                codes[err.code().name] += 1
        return codes


async def test_a_flood_is_answered_resource_exhausted_never_cancelled(
    server: Server, channel: grpc.aio.Channel
) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("K", "v"))
    codes = await asyncio.to_thread(_flood, server.address, 5000, 3000, ws, user)
    assert sum(codes.values()) == 8000
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes

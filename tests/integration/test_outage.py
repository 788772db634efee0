"""Postgres stopped under load: calls fail fast with UNAVAILABLE, readiness (each secrets.v1.*
health name) says NOT_SERVING while liveness ("") stays SERVING, and the service recovers by
itself once Postgres is back."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import Settings
from service.crypto.keyring import new_keyring_document, write_private_json
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.server import SERVICE_NAMES, start
from tests.api import ADMIN, Api, W, set_, struct, to_dict, uid
from tests.conftest import write_principals

pytestmark = pytest.mark.slow
DEADLINE = 2.0


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    """A Postgres of this test's own, which it may stop and start."""
    import pgserver

    server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="sst-outage-")) / "pg", cleanup_mode="delete")
    yield server
    server.ensure_postgres_running()
    server.cleanup()


def stop_postgres(server: Any) -> None:
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


async def wait_for_health(channel: grpc.aio.Channel, wanted: int, within: float) -> float:
    """Waits until every secrets.v1.* service says `wanted`; liveness says SERVING throughout."""
    stub = health_pb2_grpc.HealthStub(channel)
    began = time.monotonic()
    while time.monotonic() - began < within:
        live = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert live.status == health_pb2.HealthCheckResponse.SERVING, "liveness went down with the database"
        ready = [
            (await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=1)).status for name in SERVICE_NAMES
        ]
        if all(status == wanted for status in ready):
            return time.monotonic() - began
        await asyncio.sleep(0.1)
    raise AssertionError(f"health did not become {wanted} within {within}s")


async def test_postgres_outage_fails_fast_and_recovers(own_postgres: Any, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document())
    running = await start(
        Settings(
            listen="127.0.0.1:0",
            database_url=str(own_postgres.get_uri()),
            data_dir=tmp_path / "d",
            keyring_file=keyring,
            principals_file=write_principals(tmp_path / "principals.json"),
        )
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            api = Api(channel)
            ws, user = uid("ws"), uid("user")
            await api.member(ws, user, ADMIN)
            await api.save(ws, user, W, set_("K", "value-k"))

            async def resolve() -> dict[str, Any]:
                reply = await api.resolver.ResolveInputs(
                    (await _request(api, ws, user)),
                    metadata=[("authorization", "Bearer test-executor-token")],
                    timeout=DEADLINE,
                )
                return to_dict(reply.blocks[0].inputs)

            assert await resolve() == {"v": "value-k"}
            await asyncio.to_thread(stop_postgres, own_postgres)

            failures: list[tuple[grpc.StatusCode, float]] = []
            for _ in range(10):
                began = time.monotonic()
                try:
                    await resolve()
                except grpc.aio.AioRpcError as err:
                    failures.append((err.code(), time.monotonic() - began))
                try:
                    await api.save(ws, user, W, set_("K", "during-outage"), expected=1)
                except grpc.aio.AioRpcError as err:
                    failures.append((err.code(), time.monotonic() - began))
            assert failures and all(code == grpc.StatusCode.UNAVAILABLE for code, _ in failures), failures
            assert max(spent for _, spent in failures) < DEADLINE
            await wait_for_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING, within=5)

            await asyncio.to_thread(own_postgres.ensure_postgres_running)
            recovered_in = await wait_for_health(channel, health_pb2.HealthCheckResponse.SERVING, within=15)
            assert recovered_in < 15
            print(
                f"outage: {len(failures)} calls failed, slowest {max(t for _, t in failures):.3f}s; recovered in {recovered_in:.1f}s"
            )
            for _ in range(50):  # the pool replaces its dead connections on demand
                try:
                    assert await resolve() == {"v": "value-k"}
                    break
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("resolve did not recover")
            # Nothing written during the outage; writes work again.
            saved = await api.save(ws, user, W, set_("K", "after-outage"), expected=1)
            assert saved.revision == 2
    finally:
        await running.stop(grace=1)


async def _request(api: Api, ws: str, user: str) -> rpb.ResolveInputsRequest:
    return rpb.ResolveInputsRequest(
        workspace_id=ws,
        trigger=common.TRIGGER_MANUAL,
        triggering_user_id=user,
        blocks=[common.BlockInputs(block_id="b", inputs=struct({"v": "{{K}}"}))],
    )

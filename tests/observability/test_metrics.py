"""/metrics after known calls (SECRETS_METRICS_LISTEN): the gRPC server metrics count each call
once, by method and code; the service's figures are there; no label carries an id, a value or
a token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import Settings
from service.server import Running, start
from tests.api import ADMIN, Api, W, set_, status_of, uid
from tests.conftest import TOKENS
from tests.leaks import canary
from tests.observability.scrape import Samples, free_port, label_values, scrape, value


@pytest.fixture
async def metered(database_url: str, secrets_files: tuple[Path, Path, Path]) -> AsyncIterator[tuple[Running, int]]:
    root, keyring, principals = secrets_files
    port = free_port()
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        data_dir=root / "data",
        keyring_file=keyring,
        principals_file=principals,
        metrics_listen=f"127.0.0.1:{port}",
    )
    running = await start(settings)
    yield running, port
    await running.stop(grace=1)


async def eventually_scrape(port: int, ready: str, within: float = 5.0) -> Samples:
    """A scrape once the sampled figure `ready` has been sampled (once a second)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        samples = await asyncio.to_thread(scrape, port)
        if value(samples, ready) > 0 or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.2)


async def test_rpc_and_service_metrics_after_known_calls(metered: tuple[Running, int], database_url: str) -> None:
    running, port = metered
    for _ in range(50):
        if running.cache.enabled:
            break
        await asyncio.sleep(0.1)
    ws, user = uid("ws-metrics"), uid("user")
    secret = canary("metrics")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        api = Api(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(5):
            await health.Check(health_pb2.HealthCheckRequest())
        await api.member(ws, user, ADMIN)
        await api.save(ws, user, W, set_("API_TOKEN", secret), set_("LOST", canary("lost")))
        for _ in range(3):  # a miss, then hits
            await api.resolve(ws, {"b": {"h": "Bearer {{API_TOKEN}}"}}, user=user)
        # A refused token, a method no service has, a service nobody registered.
        refused = await status_of(
            api.resolver.ResolveInputs(api_request(ws), metadata=[("authorization", "Bearer not-a-token")])
        )
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        no_method = channel.unary_unary("/secrets.v1.Resolver/NoSuchMethod")
        err = await status_of(no_method(b"", metadata=[("authorization", f"Bearer {TOKENS['executor']}")]))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        no_service = channel.unary_unary(f"/evil.{ws}/Call")
        assert (await status_of(no_service(b""))).code() == grpc.StatusCode.UNIMPLEMENTED
        # A sealed value altered in the database: DATA_LOSS.
        conn = await asyncpg.connect(database_url)
        try:
            sealed = bytearray(
                await conn.fetchval("SELECT sealed FROM secrets WHERE owner_id = $1 AND key = 'LOST'", ws)
            )
            sealed[-1] ^= 1
            await conn.execute("UPDATE secrets SET sealed = $2 WHERE owner_id = $1 AND key = 'LOST'", ws, bytes(sealed))
        finally:
            await conn.close()
        lost = await status_of(api.resolve(ws, {"b": {"v": "{{LOST}}"}}, user=user))
        assert lost.code() == grpc.StatusCode.DATA_LOSS

    await running.audit.flush()
    samples = await eventually_scrape(port, "secrets_audit_events_written_total")
    check = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_type": "unary"}
    assert value(samples, "grpc_server_started_total", **check) == 5
    assert value(samples, "grpc_server_handled_total", grpc_code="OK", **check) == 5
    assert value(samples, "grpc_server_handling_seconds_count", **check) == 5
    assert value(samples, "grpc_server_handling_seconds_bucket", le="+Inf", **check) == 5
    resolve = {"grpc_service": "secrets.v1.Resolver", "grpc_method": "ResolveInputs"}
    assert value(samples, "grpc_server_started_total", **resolve) == 5
    assert value(samples, "grpc_server_handled_total", grpc_code="OK", **resolve) == 3
    assert value(samples, "grpc_server_handled_total", grpc_code="UNAUTHENTICATED", **resolve) == 1
    assert value(samples, "grpc_server_handled_total", grpc_code="DATA_LOSS", **resolve) == 1
    assert value(samples, "secrets_data_loss_total") == 1
    save = {"grpc_service": "secrets.v1.SecretStore", "grpc_method": "SaveSecrets", "grpc_code": "OK"}
    assert value(samples, "grpc_server_handled_total", **save) == 1
    unknown = {"grpc_service": "unknown", "grpc_method": "unknown", "grpc_code": "UNIMPLEMENTED"}
    assert value(samples, "grpc_server_handled_total", **unknown) == 2

    # The service's own figures, sampled once a second.
    assert value(samples, "secrets_resolve_cache_hits_total") >= 2
    assert value(samples, "secrets_resolve_cache_misses_total") >= 1
    assert value(samples, "secrets_invalidation_listener_up") == 1
    assert value(samples, "secrets_server_processes") == 1
    assert value(samples, "process_resident_memory_bytes") > 0  # one process: its own figures too
    assert value(samples, "secrets_principals") == len(TOKENS)
    assert value(samples, "secrets_data_keys", master_key_id="k1") >= 1
    assert value(samples, "secrets_db_pool_max_connections") == 10
    assert value(samples, "secrets_db_pool_connections", state="idle") >= 1
    assert ("secrets_db_pool_waiting", frozenset()) in samples
    assert ("secrets_audit_events_pending", frozenset()) in samples
    assert value(samples, "secrets_audit_events_written_total") >= 3  # the resolves' events
    assert ("secrets_audit_events_dropped_total", frozenset()) in samples
    for file in ("principals", "keyring"):
        for outcome in ("ok", "refused"):
            assert (
                "secrets_config_reloads_total",
                frozenset({("file", file), ("outcome", outcome)}),
            ) in samples

    # No label carries anything a caller chose or a secret: no workspace, no token, no value.
    labels = label_values(samples)
    for forbidden in (ws, secret, "NoSuchMethod", "evil", "not-a-token", *TOKENS.values()):
        assert not [v for v in labels if forbidden in v], forbidden


def api_request(ws: str) -> object:
    from service.gen.secrets.v1 import common_pb2, resolver_pb2

    return resolver_pb2.ResolveInputsRequest(
        workspace_id=ws, trigger=common_pb2.TRIGGER_MANUAL, blocks=[common_pb2.BlockInputs(block_id="b")]
    )


async def test_metrics_off_serves_nothing(server: object) -> None:
    """The session's server has no SECRETS_METRICS_LISTEN: prometheus_client has nothing of it."""
    from service.observability.calls import CallObserver

    observer = CallObserver(())
    assert observer._unknown.metrics is None

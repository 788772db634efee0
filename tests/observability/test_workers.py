"""`python -m service` with SECRETS_WORKERS=2, SECRETS_METRICS_LISTEN and SECRETS_LOG_FORMAT=json:
one /metrics, served by the parent, sums the calls both workers served; every log line of every
process is one JSON object."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.crypto.keyring import new_keyring_document, write_private_json
from tests.api import ADMIN, Api, W, set_, uid
from tests.conftest import write_principals
from tests.observability.scrape import free_port, scrape, value
from tests.proc import ServerProcess

pytestmark = pytest.mark.slow

CALLS = 24


@pytest.fixture
async def database_url(fresh_database_url: str) -> str:
    """A keyring of this test's own needs a database of its own."""
    return fresh_database_url


async def test_two_workers_one_metrics_endpoint_summed_and_json_logs(database_url: str, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document(["k1"]))
    port, metrics_port = free_port(), free_port()
    env = {
        "SECRETS_KEYRING_FILE": str(keyring),
        "SECRETS_PRINCIPALS_FILE": str(write_principals(tmp_path / "principals.json")),
        "SECRETS_DATABASE_URL": database_url,
        "SECRETS_DATA_DIR": str(tmp_path / "d"),
        "SECRETS_WORKERS": "2",
        "SECRETS_LISTEN": f"127.0.0.1:{port}",
        "SECRETS_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "SECRETS_LOG_FORMAT": "json",
        "SECRETS_ENV": "production",
    }
    server = ServerProcess(env, tmp_path / "workers.log")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(re.findall(r"serving secrets\.v1 on", server.log())) < 2:
            await asyncio.sleep(0.1)
        served_by: set[int] = set()
        for _ in range(CALLS):  # a connection each: the kernel spreads them over the workers
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        ws, user = uid("ws"), uid("user")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            api = Api(channel)
            await api.member(ws, user, ADMIN)
            await api.save(ws, user, W, set_("K", "worker-value"))
            for _ in range(3):
                await api.resolve(ws, {"b": {"v": "{{K}}"}}, user=user)

        check = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_code": "OK"}
        deadline = time.monotonic() + 10
        while True:
            samples = await asyncio.to_thread(scrape, metrics_port)
            ready = value(samples, "secrets_server_processes") == 2 and value(samples, "secrets_data_keys") >= 1
            if ready or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        # Both workers are counted: each reports one serving process, and the calls add up.
        assert value(samples, "secrets_server_processes") == 2
        assert value(samples, "grpc_server_handled_total", **check) == CALLS
        assert value(samples, "grpc_server_handling_seconds_count", grpc_method="Check") == CALLS
        resolve = {"grpc_service": "secrets.v1.Resolver", "grpc_method": "ResolveInputs", "grpc_code": "OK"}
        assert value(samples, "grpc_server_handled_total", **resolve) == 3
        assert value(samples, "secrets_invalidation_listener_up") == 2  # one listener per worker
        assert value(samples, "secrets_db_pool_max_connections") == 20  # two pools of 10
        assert value(samples, "secrets_principals") == 5  # the same file in each: the largest reading
        assert value(samples, "secrets_data_keys", master_key_id="k1") == 1  # one database: not doubled

        # The kernel spread the health checks: the access lines come from both workers.
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        served_by = {line["pid"] for line in lines if line.get("method") == "/grpc.health.v1.Health/Check"}
        assert len(served_by) == 2
    finally:
        code = server.terminate()
    assert code == 0
    # Every line the parent and the workers wrote is one JSON object (the server prints no banner
    # in production mode).
    for line in server.log().splitlines():
        doc = json.loads(line)
        assert {"time", "level", "logger", "message", "pid"} <= doc.keys(), line

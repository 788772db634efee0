"""F16 (calls in flight): 5,000 concurrent resolves left 24-34% CANCELLED.

Nothing bounded the calls in flight: every call was taken, queued behind the database pool, and
the excess ran past its deadline or was cancelled. SPEC 3.1: overload is RESOURCE_EXHAUSTED,
answered at once, never a queue that ends in cancellation. SECRETS_MAX_CALLS_IN_FLIGHT bounds the
calls one server process runs at once (gRPC's maximum_concurrent_rpcs); a call past it is answered
RESOURCE_EXHAUSTED before any handler runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from service.config import ConfigError, Settings
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.server import Running, start
from tests.api import ADMIN, Api, W, set_, struct, uid
from tests.conftest import metadata


def test_the_limit_is_read_from_the_environment_with_a_default() -> None:
    assert Settings.from_env({}).max_calls_in_flight == 512
    assert Settings.from_env({"SECRETS_MAX_CALLS_IN_FLIGHT": "4"}).max_calls_in_flight == 4


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_a_limit_that_is_not_a_positive_whole_number_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SECRETS_MAX_CALLS_IN_FLIGHT": value})
    assert "SECRETS_MAX_CALLS_IN_FLIGHT" in str(info.value)


@pytest.fixture
async def limited(database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path) -> AsyncIterator[Running]:
    _, keyring, principals = secrets_files
    running = await start(
        Settings(
            listen="127.0.0.1:0",
            database_url=database_url,
            data_dir=tmp_path / "d",
            keyring_file=keyring,
            principals_file=principals,
            max_calls_in_flight=4,
            resolve_cache_entries=0,  # every resolve needs a database connection
        )
    )
    yield running
    await running.stop(grace=1)


async def test_calls_past_the_limit_are_resource_exhausted_at_once_never_cancelled(limited: Running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.port}") as channel:
        api = Api(channel)
        ws, user = uid("ws"), uid("user")
        await api.member(ws, user, ADMIN)
        await api.save(ws, user, W, *[set_(f"K{i}", f"value-{i}") for i in range(20)])
        # Slow-ish: 1,500 references (the limit is 2,000): fifteen blocks of five inputs, each input
        # referencing all twenty secrets.
        inputs = struct({f"v{i}": "".join(f"{{{{K{i}}}}}" for i in range(20)) for i in range(5)})
        request = rpb.ResolveInputsRequest(
            workspace_id=ws,
            workflow_id="wf",
            execution_id=uid("exec"),
            trigger=common.TRIGGER_MANUAL,
            triggering_user_id=user,
            blocks=[common.BlockInputs(block_id=f"b{b}", inputs=inputs) for b in range(15)],
        )

    # Deterministic overlap: every database connection of the server is held, so the first calls
    # wait for one and keep their slots. The flood comes from a thread with an event loop of its
    # own, as from another process.
    held = [await limited.db.pool.acquire() for _ in range(limited.db.pool.get_max_size())]
    flood = asyncio.ensure_future(asyncio.to_thread(asyncio.run, _flood(f"127.0.0.1:{limited.port}", request, 300)))
    await asyncio.sleep(1.0)
    for conn in held:
        await limited.db.pool.release(conn)
    outcomes = await flood
    codes = Counter(code for code, _ in outcomes)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0, codes
    assert codes[grpc.StatusCode.OK] > 0, codes
    # At once: refusals came while the admitted calls were still waiting for the database.
    refused = sorted(spent for code, spent in outcomes if code == grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert refused[len(refused) // 2] < 0.5, refused
    assert max(spent for code, spent in outcomes if code == grpc.StatusCode.OK) >= 0.9


async def _flood(address: str, request: rpb.ResolveInputsRequest, calls: int) -> list[tuple[grpc.StatusCode, float]]:
    async with grpc.aio.insecure_channel(address) as channel:
        api = Api(channel)

        async def one() -> tuple[grpc.StatusCode, float]:
            began = time.monotonic()
            try:
                await api.resolver.ResolveInputs(request, metadata=metadata("executor"), timeout=30)
            except grpc.aio.AioRpcError as err:
                return err.code(), time.monotonic() - began
            return grpc.StatusCode.OK, time.monotonic() - began

        return list(await asyncio.gather(*(one() for _ in range(calls))))

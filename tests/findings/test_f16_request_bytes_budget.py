"""Finding 16 (part): 150 concurrent 4 MB saves from a non-member peaked at 1.3-1.8 GB.

gRPC reads a request before any handler can refuse it, and decoding costs a few times its size
again. Large requests now hold a share of a budget of bytes in flight while they are decoded and
served; past it, a call is answered RESOURCE_EXHAUSTED at once, without being decoded.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from service.api.registry import Held, RequestBudget
from service.config import Settings
from service.server import Running, start
from tests.api import Api, W, set_, uid

BUDGET = 5 * 1024 * 1024


def test_f16_a_held_request_gives_its_bytes_back_when_freed() -> None:
    budget = RequestBudget(100)
    assert budget.take(60)
    held = Held(object(), 60, budget)
    assert not budget.take(60)
    del held
    gc.collect()
    assert budget.held == 0
    assert budget.take(60)


@pytest.fixture
async def small_budget_server(
    database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path
) -> AsyncIterator[Running]:
    _, keyring, principals = secrets_files
    running = await start(
        Settings(
            listen="127.0.0.1:0",
            database_url=database_url,
            data_dir=tmp_path / "d",
            keyring_file=keyring,
            principals_file=principals,
            max_request_bytes_in_flight=BUDGET,
        )
    )
    yield running
    await running.stop(grace=1)


async def test_f16_large_requests_past_the_budget_are_refused_at_once(small_budget_server: Running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_budget_server.port}") as channel:
        api = Api(channel)
        ws, outsider = uid("ws"), uid("outsider")
        changes = [set_(f"K{i}", "v" * 60_000) for i in range(60)]  # about 3.6 MB

        async def save() -> grpc.StatusCode:
            try:
                await api.save(ws, outsider, W, *changes, expected=0)
            except grpc.aio.AioRpcError as err:
                return err.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(save() for _ in range(12)))
    assert set(codes) <= {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    budget_refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert budget_refused >= 1

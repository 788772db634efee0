"""A server killed with SIGKILL in the middle of a stream of saves loses no acknowledged save and
leaves no half-applied batch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from service.crypto.keyring import new_keyring_document, write_private_json
from tests.api import READ, Api, P, set_, to_dict
from tests.conftest import write_principals
from tests.proc import ServerProcess


@pytest.fixture
async def database_url(fresh_database_url: str) -> str:
    """This module's servers use keyrings of their own, so each test gets a database of its own."""
    return fresh_database_url


pytestmark = pytest.mark.slow
WRITERS = 6
KEYS = [f"K{i}" for i in range(5)]


async def test_sigkill_during_saves_loses_nothing_acknowledged(database_url: str, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document())
    env = {
        "SECRETS_DATABASE_URL": database_url,
        "SECRETS_KEYRING_FILE": str(keyring),
        "SECRETS_PRINCIPALS_FILE": str(write_principals(tmp_path / "principals.json")),
        "SECRETS_DATA_DIR": str(tmp_path / "d"),
    }
    ws = f"crash-{tmp_path.name[-8:]}"
    users = [f"writer{i}-{tmp_path.name[-8:]}" for i in range(WRITERS)]
    acked = {u: -1 for u in users}
    server = ServerProcess(env, tmp_path / "first.log")
    try:
        async with grpc.aio.insecure_channel(server.address) as ch:
            api = Api(ch)
            for u in users:
                await api.member(ws, u, READ)

            async def writer(user: str) -> None:
                n = 0
                while True:
                    try:
                        # Every batch writes all five keys with the batch number: a half-applied
                        # batch would leave two numbers behind.
                        await api.save(ws, user, P, *(set_(k, f"batch-{n}") for k in KEYS), expected=n)
                    except grpc.aio.AioRpcError:
                        return
                    acked[user] = n
                    n += 1

            tasks = [asyncio.create_task(writer(u)) for u in users]
            await asyncio.sleep(1.0)
            server.kill()  # SIGKILL, with saves in flight
            await asyncio.gather(*tasks)
    finally:
        if server.proc.poll() is None:
            server.kill()
    assert all(n >= 0 for n in acked.values()), acked

    restarted = ServerProcess(env, tmp_path / "second.log")
    try:
        async with grpc.aio.insecure_channel(restarted.address) as ch:
            api = Api(ch)
            report = {}
            for u in users:
                reply = await api.resolve(ws, {"b": {k: "{{" + k + "}}" for k in KEYS}}, user=u)
                values = set(to_dict(reply.blocks[0].inputs).values())
                assert len(values) == 1, f"{u}: half-applied batch {values}"
                stored = int(values.pop().removeprefix("batch-"))
                # The last acknowledged save is there; at most the one in flight went further.
                assert stored in (acked[u], acked[u] + 1), (u, stored, acked[u])
                assert (await api.revision(ws, u, P)) == stored + 1
                report[u] = (acked[u], stored)
        (tmp_path / "report.json").write_text(json.dumps(report))
        assert restarted.terminate() == 0
    finally:
        if restarted.proc.poll() is None:
            restarted.kill()

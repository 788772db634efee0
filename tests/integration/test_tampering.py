"""Tampering with what Postgres holds gives DATA_LOSS for the secret affected, never a wrong value."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest

from service.config import Settings
from service.crypto.keyring import new_keyring_document, write_private_json
from service.gen.secrets.v1 import secret_store_pb2 as spb
from service.server import start
from tests import pg
from tests.api import ADMIN, Api, P, W, set_, status_of, to_dict, uid
from tests.conftest import metadata, write_principals


@pytest.fixture
async def own_database(pg_admin_url: str) -> AsyncIterator[str]:
    """A database of this module's own: its servers use a keyring of their own, and a database
    remembers (and insists on) the master keys that wrap its data keys."""
    url = await pg.create_database(pg_admin_url)
    yield url
    await pg.drop_database(pg_admin_url, url)


@pytest.fixture
async def fresh_server(own_database: str, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[Api]]]:
    """Starts servers with empty caches (so each sees the database as it is now), same keys."""
    database_url = own_database
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document())
    principals = write_principals(tmp_path / "principals.json")
    started = []
    channels = []

    async def launch() -> Api:
        running = await start(
            Settings(
                listen="127.0.0.1:0",
                database_url=database_url,
                data_dir=tmp_path / "d",
                keyring_file=keyring,
                principals_file=principals,
            )
        )
        started.append(running)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        channels.append(channel)
        return Api(channel)

    yield launch
    for channel in channels:
        await channel.close()
    for running in started:
        await running.stop(grace=1)


async def value(api: Api, ws: str, user: str, key: str) -> str:
    reply = await api.resolve(ws, {"b": {"v": "{{" + key + "}}"}}, user=user)
    return str(to_dict(reply.blocks[0].inputs)["v"])


async def sql(url: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def test_flipped_byte_copied_value_and_swapped_data_keys(
    fresh_server: Callable[[], Awaitable[Api]], own_database: str
) -> None:
    database_url = own_database
    api = await fresh_server()
    ws1, ws2, user = uid("ws"), uid("ws"), uid("user")
    await api.member(ws1, user, ADMIN)
    await api.member(ws2, user, ADMIN)
    await api.save(ws1, user, W, set_("A1", "value-a1"), set_("A2", "value-a2"))
    await api.save(ws2, user, W, set_("B1", "value-b1"))
    await api.save(ws1, user, P, set_("MINE", "value-mine"))

    def sealed_of(ws: str, key: str) -> Awaitable[object]:
        return sql(database_url, "SELECT sealed FROM secrets WHERE scope = 1 AND owner_id = $1 AND key = $2", ws, key)

    original = bytes(await sealed_of(ws1, "A1"))  # type: ignore[arg-type]

    # 1. One byte flipped in A1's sealed value.
    for position in (0, 5, len(original) // 2, len(original) - 1):
        flipped = bytearray(original)
        flipped[position] ^= 0x01
        await sql(
            database_url, "UPDATE secrets SET sealed = $3 WHERE owner_id = $1 AND key = $2", ws1, "A1", bytes(flipped)
        )
        fresh = await fresh_server()
        err = await status_of(fresh.resolve(ws1, {"b": {"v": "{{A1}}"}}, user=user))
        assert err.code() == grpc.StatusCode.DATA_LOSS and "'A1'" in (err.details() or "")
        assert "value-a1" not in (err.details() or "")
        assert await value(fresh, ws1, user, "A2") == "value-a2"  # the affected secret only
        details = await fresh.store.GetSecret(
            spb.GetSecretRequest(workspace_id=ws1, scope=W, key="A1"), metadata=metadata("editor", user)
        )
        assert details.secret.summary.key == "A1"  # metadata stays readable

    # 2. A2's sealed value copied onto A1's row: it is A2's ciphertext, bound to key A2.
    a2 = await sealed_of(ws1, "A2")
    await sql(database_url, "UPDATE secrets SET sealed = $3 WHERE owner_id = $1 AND key = $2", ws1, "A1", a2)
    fresh = await fresh_server()
    err = await status_of(fresh.resolve(ws1, {"b": {"v": "{{A1}}"}}, user=user))
    assert err.code() == grpc.StatusCode.DATA_LOSS
    # ...and a value copied across workspaces (same key name, same version) fails just the same.
    await api.save(ws2, user, W, set_("A1", "value-ws2-a1"))
    other = await sealed_of(ws2, "A1")
    await sql(database_url, "UPDATE secrets SET sealed = $3 WHERE owner_id = $1 AND key = $2", ws1, "A1", other)
    fresh = await fresh_server()
    assert (await status_of(fresh.resolve(ws1, {"b": {"v": "{{A1}}"}}, user=user))).code() == grpc.StatusCode.DATA_LOSS
    await sql(database_url, "UPDATE secrets SET sealed = $3 WHERE owner_id = $1 AND key = $2", ws1, "A1", original)
    fresh = await fresh_server()
    assert await value(fresh, ws1, user, "A1") == "value-a1"  # restored bytes open again

    # 3. The wrapped data keys of the two workspaces swapped.
    await sql(
        database_url,
        """
        WITH k AS (SELECT tenant_id, wrapped FROM data_keys WHERE tenant_kind = 'w' AND tenant_id IN ($1, $2))
        UPDATE data_keys d SET wrapped = (SELECT wrapped FROM k WHERE k.tenant_id <> d.tenant_id)
         WHERE d.tenant_kind = 'w' AND d.tenant_id IN ($1, $2)
        """,
        ws1,
        ws2,
    )
    fresh = await fresh_server()
    for ws, key in ((ws1, "A2"), (ws2, "B1")):
        err = await status_of(fresh.resolve(ws, {"b": {"v": "{{" + key + "}}"}}, user=user))
        assert err.code() == grpc.StatusCode.DATA_LOSS
    assert await value(fresh, ws1, user, "MINE") == "value-mine"  # another tenant's key is untouched

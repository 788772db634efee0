"""After saving canary values, no row of any table holds one, in any encoding."""

from __future__ import annotations

import asyncpg
import grpc

from tests.api import ADMIN, Api, P, W, rename, set_, uid
from tests.leaks import canary, find_canaries


async def dump_database(url: str) -> bytes:
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
        )
        chunks: list[bytes] = []
        for t in tables:
            # Every column of every row, as Postgres renders it (bytea as hex)...
            for row in await conn.fetch(f"SELECT t::text AS line FROM {t['name']} t"):  # noqa: S608
                chunks.append(row["line"].encode())
            # ...and every bytea column raw, in case a value were stored unsealed.
            for col in await conn.fetch(
                "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.atttypid = 'bytea'::regtype"
                " AND a.attnum > 0 AND NOT a.attisdropped",
                t["name"],
            ):
                for row in await conn.fetch(f"SELECT {col['attname']} AS b FROM {t['name']}"):  # noqa: S608
                    if row["b"] is not None:
                        chunks.append(bytes(row["b"]))
        return b"\n".join(chunks)
    finally:
        await conn.close()


async def test_no_table_row_holds_a_saved_value(channel: grpc.aio.Channel, database_url: str) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    canaries = [canary(f"c{i}") for i in range(6)]
    await api.save(ws, user, W, set_("FIRST", canaries[0]), set_("SECOND", canaries[1]))
    await api.save(ws, user, W, set_("FIRST", canaries[2]))  # a second version
    await api.save(ws, user, W, rename("SECOND", "RENAMED"))  # re-sealed under the new key
    await api.save(ws, user, P, set_("MINE", canaries[3]), set_("FIRST", canaries[4]))
    reply = await api.resolve(ws, {"b": {"a": "{{FIRST}}", "b": "{{RENAMED}}", "c": "{{MINE}}"}}, user=user)
    assert not reply.blocks[0].HasField("error")
    await api.save(ws, user, P, set_("MINE", canaries[5]))

    dump = await dump_database(database_url)

    assert b"FIRST" in dump and b"RENAMED" in dump  # the dump does see keys...
    assert find_canaries(dump, canaries) == []  # ...and never a value

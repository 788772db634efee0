"""Operations: key rotation end to end, and the audit log."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from service.config import ConfigError, Settings
from service.crypto.keyring import new_keyring_document, write_private_json
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import directory_pb2 as dpb
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from service.server import Running, start
from service.tools import new_keyring_main
from tests import pg
from tests.api import ADMIN, READ, Api, P, W, set_, status_of, to_dict, uid
from tests.conftest import metadata, write_principals
from tests.integration.conftest import Canaries
from tests.leaks import find_canaries


class Instance:
    def __init__(self, running: Running) -> None:
        self.running = running
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        self.api = Api(self.channel)

    async def close(self) -> None:
        await self.channel.close(None)
        await self.running.stop(grace=1)


@pytest.fixture
async def own_database(pg_admin_url: str) -> AsyncIterator[str]:
    url = await pg.create_database(pg_admin_url)
    yield url
    await pg.drop_database(pg_admin_url, url)


async def launch(url: str, keyring: Path, principals: Path, data: Path) -> Instance:
    settings = Settings(
        listen="127.0.0.1:0", database_url=url, data_dir=data, keyring_file=keyring, principals_file=principals
    )
    return Instance(await start(settings))


async def key_status(api: Api) -> dict[str, tuple[int, bool, bool]]:
    reply = await api.ops.GetKeyStatus(opb.GetKeyStatusRequest(), metadata=metadata("ops"))
    return {k.key_id: (k.wrapped_data_keys, k.primary, k.in_keyring) for k in reply.keys}


async def test_rotation_rewraps_every_data_key_online_and_the_old_key_can_go(
    own_database: str, tmp_path: Path, canaries: Canaries
) -> None:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document(["k1"]))
    principals = write_principals(tmp_path / "principals.json")
    first = await launch(own_database, keyring, principals, tmp_path / "a")
    api = first.api
    expected: dict[tuple[str, str], str] = {}
    for _ in range(3):
        ws, user = uid("ws"), uid("user")
        await api.member(ws, user, ADMIN)
        shared, own = canaries(), canaries()
        await api.save(ws, user, W, set_("SHARED", shared))
        await api.save(ws, user, P, set_("OWN", own))
        expected[(ws, user)] = f"{shared}|{own}"
    tenants = 6  # three workspaces and three users

    assert new_keyring_main([str(keyring), "--add-key", "k2"]) == 0
    assert await key_status(api) == {"k1": (tenants, False, True), "k2": (0, True, True)}

    # Without rotation, k1 is still needed: the tool will not remove it, and a server given a
    # keyring without it (made by hand) refuses to start, naming k1 and its data keys.
    only_k2 = tmp_path / "only-k2.json"
    shutil.copy(keyring, only_k2)
    assert (
        await asyncio.to_thread(new_keyring_main, [str(only_k2), "--remove-key", "k1", "--database-url", own_database])
        == 1
    )
    assert new_keyring_main([str(only_k2), "--remove-key", "k1", "--force-unchecked"]) == 0
    with pytest.raises(ConfigError, match=rf"missing master key 'k1' \({tenants} data keys\)"):
        await launch(own_database, only_k2, principals, tmp_path / "blind")

    async def resolve_all() -> int:
        done = 0
        for (ws, user), want in expected.items():
            reply = await api.resolve(ws, {"b": {"v": "{{SHARED}}|{{OWN}}"}}, user=user)
            assert to_dict(reply.blocks[0].inputs) == {"v": want}
            done += 1
        return done

    async def keep_resolving(stop: asyncio.Event) -> int:
        count = 0
        while not stop.is_set():
            count += await resolve_all()
        return count

    stop = asyncio.Event()
    traffic = asyncio.create_task(keep_resolving(stop))
    await asyncio.sleep(0.05)
    rotated = await api.ops.RotateKeys(opb.RotateKeysRequest(), metadata=metadata("ops"))
    stop.set()
    served = await traffic
    assert (rotated.primary_key_id, rotated.rewrapped) == ("k2", tenants)
    assert served > 0
    assert await key_status(api) == {"k1": (0, False, True), "k2": (tenants, True, True)}
    again = await api.ops.RotateKeys(opb.RotateKeysRequest(), metadata=metadata("ops"))
    assert (again.rewrapped, again.already_current) == (0, tenants)
    await first.close()

    assert (
        await asyncio.to_thread(new_keyring_main, [str(keyring), "--remove-key", "k1", "--database-url", own_database])
        == 0
    )
    second = await launch(own_database, keyring, principals, tmp_path / "b")
    try:
        for (ws, user), want in expected.items():
            reply = await second.api.resolve(ws, {"b": {"v": "{{SHARED}}|{{OWN}}"}}, user=user)
            assert to_dict(reply.blocks[0].inputs) == {"v": want}
        assert await key_status(second.api) == {"k2": (tenants, True, True)}
        # Newest first, and the resolves that ran beside the rotation may fill the first pages.
        actions: set[str] = set()
        token = ""
        for _ in range(50):
            page = await second.api.ops.ListAuditEvents(
                opb.ListAuditEventsRequest(page_size=500, page_token=token), metadata=metadata("ops")
            )
            actions |= {e.action for e in page.events}
            token = page.next_page_token
            if "keys.rotate" in actions or not token:
                break
        assert "keys.rotate" in actions
    finally:
        await second.close()


async def test_a_replica_that_counted_before_a_rotation_elsewhere_takes_the_key_removal_after_a_recount(
    own_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Replica B counted k1's data keys at start-up; RotateKeys then ran on replica A and k1 was
    removed. B refuses the file on its stale count, counts again, and then takes it."""
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document(["k1"]))
    principals = write_principals(tmp_path / "principals.json")
    a = await launch(own_database, keyring, principals, tmp_path / "a")
    ws, user = uid("ws"), uid("user")
    await a.api.member(ws, user, ADMIN)
    await a.api.save(ws, user, W, set_("SHARED", "one"))
    assert await asyncio.to_thread(new_keyring_main, [str(keyring), "--add-key", "k2"]) == 0
    b = await launch(own_database, keyring, principals, tmp_path / "b")
    try:
        assert b.running.keys.keyring.current().primary_id == "k2"
        await a.api.ops.RotateKeys(opb.RotateKeysRequest(), metadata=metadata("ops"))
        argv = [str(keyring), "--remove-key", "k1", "--database-url", own_database]
        assert await asyncio.to_thread(new_keyring_main, argv) == 0
        assert "k1" not in a.running.keys.keyring.current().key_ids  # A rotated: it knows k1 wraps nothing
        assert "k1" in b.running.keys.keyring.current().key_ids  # B's count is stale: refused
        for _ in range(100):
            await asyncio.sleep(0.02)
            if "k1" not in b.running.keys.keyring.current().key_ids:
                break
        assert b.running.keys.keyring.current().key_ids == ["k2"]
        assert b.running.keys.usable()
        reply = await b.api.resolve(ws, {"b": {"v": "{{SHARED}}"}}, user=user)
        assert to_dict(reply.blocks[0].inputs) == {"v": "one"}
        assert any("counts" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    finally:
        await b.close()
        await a.close()


async def test_every_change_and_resolve_is_audited_and_pages(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, boss, other = uid("ws"), uid("boss"), uid("other")
    await api.member(ws, boss, ADMIN)
    await api.member(ws, other, READ)
    md = metadata("editor", boss)
    await api.save(ws, boss, W, set_("A", canaries()))
    await api.save(ws, boss, W, set_("A", canaries()))
    await api.store.ImportDotenv(
        spb.ImportDotenvRequest(workspace_id=ws, scope=W, content=f"B={canaries()}\n", expected_revision=2), metadata=md
    )
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="A", description="x"), metadata=md
    )
    await api.store.SetSecretMember(
        spb.SetSecretMemberRequest(
            workspace_id=ws, key="A", email=f"{other}@example.com", role=common.SECRET_ROLE_MEMBER
        ),
        metadata=md,
    )
    await api.store.RemoveSecretMember(
        spb.RemoveSecretMemberRequest(workspace_id=ws, key="A", email=f"{other}@example.com"), metadata=md
    )
    await api.store.RestoreSecretVersion(
        spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="A", version=1), metadata=md
    )
    await api.resolve(ws, {"b": {"v": "{{A}} {{B}}"}, "c": {"v": "{{NOPE}}"}}, user=boss, execution_id="exec-42")
    await api.directory.RemoveWorkspaceMember(
        dpb.RemoveWorkspaceMemberRequest(workspace_id=ws, user_id=other), metadata=metadata("directory")
    )
    # Refused attempts are recorded too: a non-member, and a stale revision.
    await status_of(api.save(ws, other, W, set_("A", canaries()), expected=4))
    await status_of(api.save(ws, boss, W, set_("A", canaries()), expected=0))

    events: list[opb.AuditEvent] = []
    token = ""
    pages = 0
    while True:
        reply = await api.ops.ListAuditEvents(
            opb.ListAuditEventsRequest(workspace_id=ws, page_size=3, page_token=token), metadata=metadata("ops")
        )
        events.extend(reply.events)
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert pages == 5
    # Newest first by event time (a buffered resolve event may get its id after later changes).
    times = [(e.time.ToDatetime(), e.id) for e in events]
    assert times == sorted(times, reverse=True) and len({e.id for e in events}) == len(events)
    actions = [e.action for e in reversed(events)]
    assert actions == [
        "member.put",
        "member.put",
        "secrets.save",
        "secrets.save",
        "secrets.import",
        "secret.details",
        "secret.member.set",
        "secret.member.remove",
        "secret.restore",
        "inputs.resolve",
        "member.remove",
        "secrets.save",
        "secrets.save",
    ]
    denied, conflict = events[1], events[0]
    assert (denied.outcome, denied.user_id) == ("denied", other) and "not a member" in denied.detail
    assert (conflict.outcome, conflict.user_id) == ("conflict", boss) and "current revision 4" in conflict.detail
    resolve = next(e for e in events if e.action == "inputs.resolve")
    assert resolve.execution_id == "exec-42" and resolve.user_id == boss
    assert resolve.principal == "test-executor" and resolve.outcome == "1 block(s) failed"
    assert [(k.key, k.scope, k.version) for k in resolve.keys] == [("A", W, 3), ("B", W, 1)]
    restore = next(e for e in events if e.action == "secret.restore")
    assert [(k.key, k.version) for k in restore.keys] == [("A", 3)] and restore.principal == "test-editor"
    assert all(e.workspace_id == ws for e in events)
    assert find_canaries(b"".join(e.SerializeToString() for e in events), canaries.values) == []

    err = await status_of(
        api.ops.ListAuditEvents(opb.ListAuditEventsRequest(page_token="bogus"), metadata=metadata("ops"))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

"""Issue 13 on a real server and Postgres: usage per (secret, workflow) recorded from resolves
(and kept across a restart), the in-use guard on delete and rename, the trash (restore every
version, purge for good), and expiry. Every editor response and error of this module is searched
for the values saved (recorded_api), and the database is dumped and searched after the trash."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from service.app.trash import purge_past_window
from service.config import Settings
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from service.server import Running, start
from tests.api import ADMIN, WRITE, Api, P, W, delete, rename, set_, status_of, struct, to_dict, uid
from tests.conftest import Server, metadata
from tests.integration.conftest import Canaries
from tests.integration.test_no_plaintext import dump_database
from tests.leaks import find_canaries
from tests.recording import ResponseRecorder


async def resolve(
    api: Api, ws: str, user: str, inputs: dict[str, Any], *, workflow: str = "wf", execution: str = ""
) -> rpb.ResolveInputsResponse:
    return await api.resolver.ResolveInputs(
        rpb.ResolveInputsRequest(
            workspace_id=ws,
            workflow_id=workflow,
            execution_id=execution or uid("exec"),
            trigger=common.TRIGGER_MANUAL,
            triggering_user_id=user,
            blocks=[common.BlockInputs(block_id="b", inputs=struct(inputs))],
        ),
        metadata=metadata("executor"),
    )


async def get(api: Api, ws: str, user: str, key: str, scope: int = W) -> spb.SecretDetails:
    reply = await api.store.GetSecret(
        spb.GetSecretRequest(workspace_id=ws, scope=scope, key=key), metadata=metadata("editor", user)
    )
    return reply.secret


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


async def usage_of(api: Api, ws: str, user: str, key: str, workflows: int, scope: int = W) -> list[spb.SecretUsage]:
    """The secret's usage once `workflows` workflows show (usage is written per audit batch)."""
    found: list[spb.SecretUsage] = []

    async def shown() -> bool:
        nonlocal found
        found = list((await get(api, ws, user, key, scope)).usage)
        return len(found) >= workflows

    await eventually(shown)
    return found


def precondition_violations(err: grpc.aio.AioRpcError) -> list[error_details_pb2.PreconditionFailure.Violation]:
    found: list[error_details_pb2.PreconditionFailure.Violation] = []
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                failure = error_details_pb2.PreconditionFailure()
                if detail.Unpack(failure):
                    found.extend(failure.violations)
    return found


def at(moment: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)
    return ts


async def save(
    api: Api, ws: str, user: str, scope: int, *changes: spb.SecretChange, acknowledge: bool = False
) -> spb.SaveSecretsResponse:
    return await api.store.SaveSecrets(
        spb.SaveSecretsRequest(
            workspace_id=ws,
            scope=scope,
            expected_revision=await api.revision(ws, user, scope),
            changes=list(changes),
            acknowledge_in_use=acknowledge,
        ),
        metadata=metadata("editor", user),
    )


# --------------------------------------------------------------------------------------------
# Usage


@pytest.fixture
async def own_server(
    database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[Running]]]:
    """Starts servers of this test's own on the session's database, and stops what is left."""
    _, keyring, principals = secrets_files
    started: list[Running] = []

    async def start_one() -> Running:
        settings = Settings(
            listen="127.0.0.1:0",
            database_url=database_url,
            data_dir=tmp_path / f"d{len(started)}",
            keyring_file=keyring,
            principals_file=principals,
        )
        started.append(await start(settings))
        return started[-1]

    yield start_one
    for running in started:
        if running.server is not None:
            await running.stop(grace=1)


async def test_usage_by_workflow_is_shown_and_survives_a_restart(
    own_server: Callable[[], Awaitable[Running]], canaries: Canaries
) -> None:
    first = await own_server()
    recorder = ResponseRecorder()
    ws, user = uid("ws"), uid("user")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}", interceptors=[recorder]) as channel:
        api = Api(channel)
        await api.member(ws, user, ADMIN)
        await api.save(ws, user, W, set_("ONE", canaries("one")), set_("TWO", canaries("two")))
        await api.save(ws, user, W, set_("IDLE", canaries("idle")))
        await api.save(ws, user, P, set_("MINE", canaries("mine")))
        for execution in ("a-1", "a-2"):
            reply = await resolve(api, ws, user, {"x": "{{ONE}}"}, workflow="wf-a", execution=execution)
            assert not reply.blocks[0].HasField("error")
        await asyncio.sleep(0.01)
        reply = await resolve(api, ws, user, {"x": "{{ONE}} {{TWO}} {{MINE}}"}, workflow="wf-b", execution="b-1")
        assert not reply.blocks[0].HasField("error")

        one = await usage_of(api, ws, user, "ONE", 2)
        # Most recent first; uses counted per resolve; the last execution of each workflow.
        assert [(u.workflow_id, u.uses_last_30_days, u.last_execution_id) for u in one] == [
            ("wf-b", 1, "b-1"),
            ("wf-a", 2, "a-2"),
        ]
        assert one[0].last_used_at.ToDatetime() >= one[1].last_used_at.ToDatetime()
        mine = await usage_of(api, ws, user, "MINE", 1, scope=P)
        assert [u.workflow_id for u in mine] == ["wf-b"]
        details = await get(api, ws, user, "ONE")
        assert details.summary.last_used_at == one[0].last_used_at
        listing = await api.list(ws, user)
        used = {s.key: s.HasField("last_used_at") for s in [*listing.workspace_secrets, *listing.personal_secrets]}
        assert used == {"IDLE": False, "ONE": True, "TWO": True, "MINE": True}
    await first.stop(grace=1)

    second = await own_server()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}", interceptors=[recorder]) as channel:
        api = Api(channel)
        again = list((await get(api, ws, user, "ONE")).usage)
        assert [(u.workflow_id, u.uses_last_30_days, u.last_execution_id, u.last_used_at) for u in again] == [
            (u.workflow_id, u.uses_last_30_days, u.last_execution_id, u.last_used_at) for u in one
        ]
        # More resolves after the restart add to what was kept.
        await resolve(api, ws, user, {"x": "{{ONE}}"}, workflow="wf-a", execution="a-3")

        async def counted() -> bool:
            usage = (await get(api, ws, user, "ONE")).usage
            return usage[0].workflow_id == "wf-a" and usage[0].uses_last_30_days == 3

        await eventually(counted)
    assert find_canaries(recorder.everything(), canaries.values) == []


# --------------------------------------------------------------------------------------------
# The in-use guard


async def test_guard_refuses_delete_and_rename_of_a_used_secret_unless_acknowledged(
    recorded_api: Api, canaries: Canaries
) -> None:
    api = recorded_api
    ws, boss = uid("ws"), uid("boss")
    await api.member(ws, boss, ADMIN)
    await api.save(ws, boss, W, set_("USED", canaries("used")), set_("OTHER", canaries("other")))
    await resolve(api, ws, boss, {"x": "{{USED}}"}, workflow="wf-guard", execution="e-guard")
    await usage_of(api, ws, boss, "USED", 1)
    revision = await api.revision(ws, boss, W)

    for change in (delete("USED"), rename("USED", "RENAMED")):
        err = await status_of(save(api, ws, boss, W, change))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'USED'" in (err.details() or "") and "acknowledge_in_use" in (err.details() or "")
        violations = precondition_violations(err)
        assert [(v.type, v.subject) for v in violations] == [("SECRET_IN_USE", "workflows/wf-guard")]
        assert "e-guard" in violations[0].description and "last used it at 20" in violations[0].description
    # A batch with one used secret is refused whole; nothing was saved.
    err = await status_of(save(api, ws, boss, W, delete("OTHER"), delete("USED")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await api.revision(ws, boss, W) == revision
    assert {s.key for s in (await api.list(ws, boss)).workspace_secrets} == {"USED", "OTHER"}

    # Acknowledged, the rename goes through; so does the delete, of the renamed secret (usage
    # belongs to the secret, whatever its key).
    saved = await save(api, ws, boss, W, rename("USED", "RENAMED"), acknowledge=True)
    assert saved.saved[0].action == spb.SAVE_ACTION_RENAMED
    err = await status_of(save(api, ws, boss, W, delete("RENAMED")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    saved = await save(api, ws, boss, W, delete("RENAMED"), acknowledge=True)
    assert saved.saved[0].action == spb.SAVE_ACTION_DELETED
    # An unused secret deletes without acknowledging anything.
    await save(api, ws, boss, W, delete("OTHER"))


async def test_guard_reports_personal_fallbacks_without_naming_anyone(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, boss, member, outsider = uid("ws"), uid("boss"), uid("member"), uid("outsider")
    await api.member(ws, boss, ADMIN)
    await api.member(ws, member, WRITE)
    await api.save(ws, boss, W, set_("SHARED", canaries("shared")), set_("LOCKED", canaries("locked")))
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="LOCKED", restricted=True),
        metadata=metadata("editor", boss),
    )
    await api.save(ws, member, P, set_("SHARED", canaries("member-shared")), set_("LOCKED", canaries("member-l")))
    await api.save(ws, outsider, P, set_("SHARED", canaries("outsider")), expected=0)  # not a member of ws

    err = await status_of(save(api, ws, boss, W, delete("SHARED")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    violations = precondition_violations(err)
    assert [(v.type, v.subject) for v in violations] == [("PERSONAL_FALLBACK", "secrets/SHARED")]
    assert "1 workspace member(s)" in violations[0].description
    everything = (err.details() or "") + "".join(v.description + v.subject for v in violations)
    assert member not in everything and outsider not in everything
    # The restricted secret is not the member's to use: their runs use their own already, so
    # deleting it changes nothing for them.
    await save(api, ws, boss, W, delete("LOCKED"))
    await save(api, ws, boss, W, delete("SHARED"), acknowledge=True)


# --------------------------------------------------------------------------------------------
# The trash


async def deleted(api: Api, ws: str, user: str) -> spb.ListDeletedSecretsResponse:
    return await api.store.ListDeletedSecrets(
        spb.ListDeletedSecretsRequest(workspace_id=ws), metadata=metadata("editor", user)
    )


async def test_trash_restores_every_version_and_the_value_resolves_again(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, boss, helper, writer = uid("ws"), uid("boss"), uid("helper"), uid("writer")
    await api.member(ws, boss, ADMIN)
    await api.member(ws, helper, WRITE)
    await api.member(ws, writer, WRITE)
    values = [canaries(f"v{i}") for i in range(1, 4)]
    for value in values:
        await api.save(ws, boss, W, set_("KEY", value))
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="KEY", display_name="The key"),
        metadata=metadata("editor", boss),
    )
    await api.store.SetSecretMember(
        spb.SetSecretMemberRequest(
            workspace_id=ws, key="KEY", email=f"{helper}@example.com", role=common.SECRET_ROLE_ADMIN
        ),
        metadata=metadata("editor", boss),
    )
    reply = await resolve(api, ws, boss, {"x": "{{KEY}}"})
    assert to_dict(reply.blocks[0].inputs) == {"x": values[2]}
    await usage_of(api, ws, boss, "KEY", 1)
    before = await get(api, ws, boss, "KEY")

    await save(api, ws, helper, W, delete("KEY"), acknowledge=True)  # the secret's ADMIN may delete
    gone = await resolve(api, ws, boss, {"x": "{{KEY}}"})
    assert gone.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND  # never resolves
    listing = await deleted(api, ws, boss)
    (entry,) = listing.workspace_secrets
    assert entry.summary.key == "KEY" and entry.summary.version == 3 and entry.kept_versions == 3
    assert entry.summary.display_name == "The key" and entry.deleted_by == helper
    assert entry.purge_at.ToDatetime() - entry.deleted_at.ToDatetime() == timedelta(days=30)
    assert (await deleted(api, ws, writer)).workspace_secrets[0].deleted_id == entry.deleted_id  # members see it

    request = spb.RestoreDeletedSecretRequest(workspace_id=ws, scope=W, deleted_id=entry.deleted_id)
    # What deleting needs: a WRITE member who is not the secret's ADMIN may not restore it.
    err = await status_of(api.store.RestoreDeletedSecret(request, metadata=metadata("editor", writer)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    revision = await api.revision(ws, boss, W)
    restored = await api.store.RestoreDeletedSecret(request, metadata=metadata("editor", helper))
    assert restored.revision == revision + 1
    secret = restored.secret
    assert [v.version for v in secret.versions] == [3, 2, 1]
    assert secret.summary.display_name == "The key" and secret.summary.version == 3
    assert {(m.user_id, m.role) for m in secret.members} == {(m.user_id, m.role) for m in before.members}
    assert [u.workflow_id for u in secret.usage] == ["wf"]  # its usage comes back with it
    assert (await deleted(api, ws, boss)).workspace_secrets == []

    reply = await resolve(api, ws, boss, {"x": "{{KEY}}"})
    assert to_dict(reply.blocks[0].inputs) == {"x": values[2]}
    # Every kept version opens: restore version 1, and it resolves to the first value.
    await api.store.RestoreSecretVersion(
        spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="KEY", version=1),
        metadata=metadata("editor", boss),
    )
    reply = await resolve(api, ws, boss, {"x": "{{KEY}}"}, workflow="wf-2")
    assert to_dict(reply.blocks[0].inputs) == {"x": values[0]}

    # A key created again since the delete: the old one cannot come back over it.
    await save(api, ws, boss, W, delete("KEY"), acknowledge=True)
    (entry,) = (await deleted(api, ws, boss)).workspace_secrets
    await api.save(ws, boss, W, set_("KEY", canaries("new")))
    again = spb.RestoreDeletedSecretRequest(workspace_id=ws, scope=W, deleted_id=entry.deleted_id)
    err = await status_of(api.store.RestoreDeletedSecret(again, metadata=metadata("editor", boss)))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_personal_secrets_go_to_the_trash_of_their_owner_only(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, owner, other = uid("ws"), uid("owner"), uid("other")
    await api.member(ws, owner, WRITE)
    await api.member(ws, other, ADMIN)
    value = canaries("personal")
    await api.save(ws, owner, P, set_("MINE", value))
    await api.save(ws, owner, P, delete("MINE"))
    (entry,) = (await deleted(api, ws, owner)).personal_secrets
    assert (await deleted(api, ws, other)).personal_secrets == []
    for who in (other,):  # another user names the same id: not theirs to see, restore or purge
        request = spb.RestoreDeletedSecretRequest(workspace_id=ws, scope=P, deleted_id=entry.deleted_id)
        err = await status_of(api.store.RestoreDeletedSecret(request, metadata=metadata("editor", who)))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        purge = spb.PurgeDeletedSecretRequest(workspace_id=ws, scope=P, deleted_id=entry.deleted_id)
        err = await status_of(api.store.PurgeDeletedSecret(purge, metadata=metadata("editor", who)))
        assert err.code() == grpc.StatusCode.NOT_FOUND
    await api.store.RestoreDeletedSecret(
        spb.RestoreDeletedSecretRequest(workspace_id=ws, scope=P, deleted_id=entry.deleted_id),
        metadata=metadata("editor", owner),
    )
    reply = await resolve(api, ws, owner, {"x": "{{MINE}}"})
    assert to_dict(reply.blocks[0].inputs) == {"x": value}
    bad = spb.RestoreDeletedSecretRequest(workspace_id=ws, scope=P, deleted_id=0)
    err = await status_of(api.store.RestoreDeletedSecret(bad, metadata=metadata("editor", owner)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def trash_rows(url: str, secret_id: int) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        counts = {}
        for table, column in (
            ("secrets", "id"),
            ("deleted_secrets", "id"),
            ("deleted_secret_versions", "secret_id"),
            ("deleted_secret_members", "secret_id"),
            ("secret_usage", "secret_id"),
            ("secret_usage_days", "secret_id"),
        ):
            counts[table] = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE {column} = $1",  # noqa: S608
                secret_id,
            )
        return counts
    finally:
        await conn.close()


async def test_purge_removes_the_rows_at_once_and_after_the_window(
    recorded_api: Api, canaries: Canaries, server: Server, database_url: str
) -> None:
    api = recorded_api
    ws, boss, writer = uid("ws"), uid("boss"), uid("writer")
    await api.member(ws, boss, ADMIN)
    await api.member(ws, writer, WRITE)
    saved_values = [canaries("p1"), canaries("p2"), canaries("late")]
    await api.save(ws, boss, W, set_("PURGED", saved_values[0]), set_("LATE", saved_values[2]))
    await api.save(ws, boss, W, set_("PURGED", saved_values[1]))
    await resolve(api, ws, boss, {"x": "{{PURGED}}"})
    await usage_of(api, ws, boss, "PURGED", 1)
    await save(api, ws, boss, W, delete("PURGED"), delete("LATE"), acknowledge=True)
    entries = {e.summary.key: e for e in (await deleted(api, ws, boss)).workspace_secrets}
    purged_id, late_id = entries["PURGED"].deleted_id, entries["LATE"].deleted_id
    assert await trash_rows(database_url, purged_id) == {
        "secrets": 0,
        "deleted_secrets": 1,
        "deleted_secret_versions": 2,
        "deleted_secret_members": 1,
        "secret_usage": 1,
        "secret_usage_days": 1,
    }
    # The database holds the trash sealed: no value in any row of any table.
    assert find_canaries(await dump_database(database_url), saved_values) == []

    purge = spb.PurgeDeletedSecretRequest(workspace_id=ws, scope=W, deleted_id=purged_id)
    err = await status_of(api.store.PurgeDeletedSecret(purge, metadata=metadata("editor", writer)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED  # workspace ADMIN only
    await api.store.PurgeDeletedSecret(purge, metadata=metadata("editor", boss))
    assert set((await trash_rows(database_url, purged_id)).values()) == {0}
    err = await status_of(api.store.PurgeDeletedSecret(purge, metadata=metadata("editor", boss)))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    # Past the window, the maintenance purge removes it (here: made 31 days old, purged now).
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE deleted_secrets SET deleted_at = now() - interval '31 days' WHERE id = $1", late_id)
    finally:
        await conn.close()
    assert [e.deleted_id for e in (await deleted(api, ws, boss)).workspace_secrets] == []  # out of the window
    assert await purge_past_window(server.running.db, 30) >= 1
    assert set((await trash_rows(database_url, late_id)).values()) == {0}
    events = await api.ops.ListAuditEvents(
        opb.ListAuditEventsRequest(workspace_id=ws, page_size=50), metadata=metadata("ops")
    )
    purges = [e for e in events.events if e.action == "secret.trash.purge"]
    assert {e.principal for e in purges} == {"test-editor", "service"}


# --------------------------------------------------------------------------------------------
# Expiry


async def expire(api: Api, ws: str, user: str, key: str, when: datetime | None, scope: int = W) -> spb.SecretDetails:
    request = spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=scope, key=key)
    if when is None:
        request.clear_expires_at = True
    else:
        request.expires_at.CopyFrom(at(when))
    return (await api.store.UpdateSecretDetails(request, metadata=metadata("editor", user))).secret


async def test_an_expired_secret_fails_its_block_and_an_unexpired_one_resolves(
    recorded_api: Api, canaries: Canaries
) -> None:
    api = recorded_api
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("OLD", canaries("old")), set_("FRESH", canaries("fresh")))
    await api.save(ws, user, W, set_("PLAIN", canaries("plain")))
    await api.save(ws, user, P, set_("OLD", canaries("personal-old")))  # no fallback to it
    now = datetime.now(UTC)
    details = await expire(api, ws, user, "OLD", now - timedelta(minutes=1))
    assert details.summary.expired and details.summary.HasField("expires_at")
    await expire(api, ws, user, "FRESH", now + timedelta(hours=1))

    reply = await api.resolver.ResolveInputs(
        rpb.ResolveInputsRequest(
            workspace_id=ws,
            workflow_id="wf",
            trigger=common.TRIGGER_MANUAL,
            triggering_user_id=user,
            blocks=[
                common.BlockInputs(block_id="stale", inputs=struct({"auth": {"token": "{{OLD}}"}})),
                common.BlockInputs(block_id="ok", inputs=struct({"a": "{{FRESH}}", "b": "{{PLAIN}}"})),
            ],
        ),
        metadata=metadata("executor"),
    )
    stale, ok = reply.blocks
    assert stale.error.code == common.BLOCK_ERROR_CODE_SECRET_EXPIRED
    assert (stale.error.key, stale.error.field_path) == ("OLD", "auth.token")
    message = stale.error.message
    assert message.startswith("SECRET_EXPIRED: block 'stale' field 'auth.token' references secret 'OLD'")
    assert "expired at" in message
    assert not ok.HasField("error") and set(to_dict(ok.inputs)) == {"a", "b"}

    listing = await api.list(ws, user)
    shown = {s.key: (s.expired, s.HasField("expires_at")) for s in listing.workspace_secrets}
    assert shown == {"OLD": (True, True), "FRESH": (False, True), "PLAIN": (False, False)}

    async def expiring(window: timedelta) -> set[str]:
        duration = duration_pb2.Duration()
        duration.FromTimedelta(window)
        page = await api.store.ListSecrets(
            spb.ListSecretsRequest(workspace_id=ws, expiring_within=duration), metadata=metadata("editor", user)
        )
        return {s.key for s in [*page.workspace_secrets, *page.personal_secrets]}

    assert await expiring(timedelta(hours=2)) == {"OLD", "FRESH"}
    assert await expiring(timedelta(minutes=1)) == {"OLD"}
    negative = duration_pb2.Duration(seconds=-1)
    err = await status_of(
        api.store.ListSecrets(
            spb.ListSecretsRequest(workspace_id=ws, expiring_within=negative), metadata=metadata("editor", user)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    explained = await api.store.ExplainReferences(
        spb.ExplainReferencesRequest(
            workspace_id=ws,
            trigger=common.TRIGGER_MANUAL,
            blocks=[common.BlockInputs(block_id="b", inputs=struct({"x": "{{OLD}}"}))],
        ),
        metadata=metadata("editor", user),
    )
    assert explained.references[0].problem == common.BLOCK_ERROR_CODE_SECRET_EXPIRED

    # Cleared, it resolves again.
    await expire(api, ws, user, "OLD", None)
    reply = await resolve(api, ws, user, {"x": "{{OLD}}"})
    assert not reply.blocks[0].HasField("error")


async def test_the_resolve_cache_does_not_serve_a_secret_past_its_expiry(
    recorded_api: Api, canaries: Canaries, server: Server
) -> None:
    api = recorded_api
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("SOON", canaries("soon")))
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    await expire(api, ws, user, "SOON", soon)
    assert server.running.cache.enabled
    hits = server.running.cache.hits
    for _ in range(3):  # the first fills the cache, the others are served from it
        reply = await resolve(api, ws, user, {"x": "{{SOON}}"})
        assert not reply.blocks[0].HasField("error")
    assert server.running.cache.hits >= hits + 2
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    reply = await resolve(api, ws, user, {"x": "{{SOON}}"})
    assert reply.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_EXPIRED


async def test_expires_at_out_of_range_is_invalid_argument(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("K", canaries("k")))
    request = spb.UpdateSecretDetailsRequest(
        workspace_id=ws, scope=W, key="K", expires_at=timestamp_pb2.Timestamp(seconds=10**12)
    )
    err = await status_of(api.store.UpdateSecretDetails(request, metadata=metadata("editor", user)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "expires_at" in (err.details() or "")
    both = spb.UpdateSecretDetailsRequest(
        workspace_id=ws, scope=W, key="K", expires_at=at(datetime.now(UTC)), clear_expires_at=True
    )
    err = await status_of(api.store.UpdateSecretDetails(both, metadata=metadata("editor", user)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------------------------
# The Python client


async def test_python_client_guard_trash_and_expiry(server: Server, canaries: Canaries) -> None:
    from secrets_client import DirectoryClient, EditorClient, ExecutorClient
    from secrets_client.errors import FailedPrecondition

    from tests.conftest import TOKENS

    editor = EditorClient(server.address, TOKENS["editor"])
    executor = ExecutorClient(server.address, TOKENS["executor"])
    directory = DirectoryClient(server.address, TOKENS["directory"])
    try:
        ws, user = uid("ws"), uid("user")
        await directory.put_member(ws, user, f"{user}@example.com", "admin")
        value = canaries("client")
        saved = await editor.save(user, ws, expected_revision=0, set={"TOKEN": value})
        resolution = await executor.resolve(
            ws, {"b": {"x": "{{TOKEN}}"}}, trigger="manual", triggering_user_id=user, workflow_id="wf-client"
        )
        assert resolution.blocks["b"].ok
        await eventually(lambda: _has_usage(editor, user, ws))
        with pytest.raises(FailedPrecondition) as info:
            await editor.save(user, ws, expected_revision=saved.revision, delete=["TOKEN"])
        assert [(t, s) for t, s, _ in info.value.violations] == [("SECRET_IN_USE", "workflows/wf-client")]
        await editor.save(user, ws, expected_revision=saved.revision, delete=["TOKEN"], acknowledge_in_use=True)
        (entry,) = (await editor.list_deleted(user, ws)).workspace_secrets
        restored = await editor.restore_deleted(user, ws, entry.deleted_id)
        assert [v.version for v in restored.secret.versions] == [1]
        details = await editor.set_expiry(user, ws, "TOKEN", datetime.now(UTC) - timedelta(seconds=1))
        assert details.summary.expired
        resolution = await executor.resolve(ws, {"b": {"x": "{{TOKEN}}"}}, trigger="manual", triggering_user_id=user)
        error = resolution.blocks["b"].error
        assert error is not None and error.code == "SECRET_EXPIRED"
        await editor.set_expiry(user, ws, "TOKEN", None)
        await editor.save(user, ws, expected_revision=restored.revision, delete=["TOKEN"], acknowledge_in_use=True)
        (entry,) = (await editor.list_deleted(user, ws)).workspace_secrets
        await editor.purge_deleted(user, ws, entry.deleted_id)
        assert (await editor.list_deleted(user, ws)).workspace_secrets == []
    finally:
        for c in (editor, executor, directory):
            await c.close()


async def _has_usage(editor: Any, user: str, ws: str) -> bool:
    return bool((await editor.get_secret(user, ws, "TOKEN")).usage)


# --------------------------------------------------------------------------------------------
# Data-key rotation and the trash


async def test_a_data_key_rotation_reseals_the_trash_so_a_restore_still_opens(
    recorded_api: Api, canaries: Canaries, database_url: str
) -> None:
    api = recorded_api
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    first, second = canaries("rot1"), canaries("rot2")
    await api.save(ws, user, W, set_("ROTATED", first))
    await api.save(ws, user, W, set_("ROTATED", second))
    await save(api, ws, user, W, delete("ROTATED"))
    (entry,) = (await deleted(api, ws, user)).workspace_secrets
    reply = await api.ops.RotateDataKeys(
        opb.RotateDataKeysRequest(workspace_id=ws), metadata=metadata("ops"), timeout=120
    )
    assert reply.resealed == 2  # the two kept versions in the trash
    conn = await asyncpg.connect(database_url)
    try:
        generations = await conn.fetch(
            "SELECT DISTINCT get_byte(sealed, 4) AS g FROM deleted_secret_versions WHERE secret_id = $1",
            entry.deleted_id,
        )
        keys = await conn.fetch("SELECT generation FROM data_keys WHERE tenant_kind = 'w' AND tenant_id = $1", ws)
    finally:
        await conn.close()
    assert [r["g"] for r in generations] == [reply.new_generation]
    assert [r["generation"] for r in keys] == [reply.new_generation]  # the old key is gone
    await api.store.RestoreDeletedSecret(
        spb.RestoreDeletedSecretRequest(workspace_id=ws, scope=W, deleted_id=entry.deleted_id),
        metadata=metadata("editor", user),
    )
    reply_resolve = await resolve(api, ws, user, {"x": "{{ROTATED}}"})
    assert to_dict(reply_resolve.blocks[0].inputs) == {"x": second}
    await api.store.RestoreSecretVersion(
        spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="ROTATED", version=1),
        metadata=metadata("editor", user),
    )
    reply_resolve = await resolve(api, ws, user, {"x": "{{ROTATED}}"})
    assert to_dict(reply_resolve.blocks[0].inputs) == {"x": first}

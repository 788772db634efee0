"""The editor experience (SPEC 2.1, 2.5-2.7, 3.2) through the real server. Every response this
module receives is recorded and searched for the values it saved (see conftest.recorded_api)."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import directory_pb2 as dpb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, WRITE, Api, P, W, delete, rename, set_, status_of, struct, to_dict, uid
from tests.conftest import metadata
from tests.integration.conftest import Canaries


def violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [(v.field, v.description) for v in bad.field_violations]


async def value_of(api: Api, ws: str, user: str, key: str) -> str:
    reply = await api.resolve(ws, {"b": {"v": "{{" + key + "}}"}}, user=user)
    assert not reply.blocks[0].HasField("error"), reply.blocks[0].error.message
    return str(to_dict(reply.blocks[0].inputs)["v"])


@pytest.fixture
async def admin_ws(recorded_api: Api) -> tuple[Api, str, str]:
    ws, admin = uid("ws"), uid("admin")
    await recorded_api.member(ws, admin, ADMIN)
    return recorded_api, ws, admin


# -- saving ------------------------------------------------------------------------------------


async def test_rename_moves_value_versions_and_members(admin_ws: tuple[Api, str, str], canaries: Canaries) -> None:
    api, ws, admin = admin_ws
    v1, v2 = canaries(), canaries()
    await api.save(ws, admin, W, set_("OLD", v1))
    await api.save(ws, admin, W, set_("OLD", v2))
    saved = await api.save(ws, admin, W, rename("OLD", "NEW"))
    assert [(s.key, s.previous_key, s.action, s.version) for s in saved.saved] == [
        ("NEW", "OLD", spb.SAVE_ACTION_RENAMED, 2)
    ]
    assert await value_of(api, ws, admin, "NEW") == v2
    details = await api.store.GetSecret(
        spb.GetSecretRequest(workspace_id=ws, scope=W, key="NEW"), metadata=metadata("editor", admin)
    )
    assert [v.version for v in details.secret.versions] == [2, 1]
    # The old version was re-sealed under the new key too: it can still be restored.
    await api.store.RestoreSecretVersion(
        spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="NEW", version=1),
        metadata=metadata("editor", admin),
    )
    assert await value_of(api, ws, admin, "NEW") == v1
    reply = await api.resolve(ws, {"b": {"v": "{{OLD}}"}}, user=admin)
    assert reply.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND


async def test_oversized_and_empty_values_duplicates_and_bad_keys_are_reported_per_change(
    admin_ws: tuple[Api, str, str], canaries: Canaries
) -> None:
    api, ws, admin = admin_ws
    big = canaries("big") + "x" * (64 * 1024)
    err = await status_of(
        api.save(
            ws,
            admin,
            W,
            set_("OK", canaries()),
            set_("BIG", big),
            set_("EMPTY", ""),
            set_("bad.key", "v"),
            set_("OK", "again"),
            rename("OK2", "has space"),
            expected=0,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(err)
    assert [f for f, _ in found] == [
        "changes[1].value",
        "changes[2].value",
        "changes[3].key",
        "changes[4].key",
        "changes[5].rename_to",
    ]
    assert "65536 bytes" in found[0][1]
    assert (await api.list(ws, admin)).workspace_secrets == []  # nothing written


async def test_a_value_of_exactly_64_kib_is_accepted(admin_ws: tuple[Api, str, str], canaries: Canaries) -> None:
    api, ws, admin = admin_ws
    value = canaries("max")
    value += "y" * (64 * 1024 - len(value))
    await api.save(ws, admin, W, set_("MAX", value))
    assert await value_of(api, ws, admin, "MAX") == value


async def test_over_large_batch_is_rejected(admin_ws: tuple[Api, str, str]) -> None:
    api, ws, admin = admin_ws
    err = await status_of(api.save(ws, admin, W, *[set_(f"K{i}", "v") for i in range(1001)], expected=0))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err) == [("changes", "more than 1000 changes")]


async def test_stale_revision_is_aborted_with_the_current_revision_and_nothing_is_written(
    admin_ws: tuple[Api, str, str], canaries: Canaries
) -> None:
    api, ws, admin = admin_ws
    await api.save(ws, admin, W, set_("A", canaries()), expected=0)
    await api.save(ws, admin, W, set_("B", canaries()), expected=1)
    err = await status_of(api.save(ws, admin, W, set_("C", canaries()), delete("A"), expected=1))
    assert err.code() == grpc.StatusCode.ABORTED
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "REVISION_CONFLICT" and info.metadata["current_revision"] == "2"
    listing = await api.list(ws, admin)
    assert [s.key for s in listing.workspace_secrets] == ["A", "B"] and listing.workspace_revision == 2


# -- import ------------------------------------------------------------------------------------


async def import_env(
    api: Api,
    ws: str,
    user: str,
    content: str,
    scope: int = W,
    *,
    dry_run: bool = False,
    overwrite: bool = False,
    expected: int | None = None,
) -> spb.ImportDotenvResponse:
    if expected is None:
        expected = await api.revision(ws, user, scope)
    return await api.store.ImportDotenv(
        spb.ImportDotenvRequest(
            workspace_id=ws,
            scope=scope,
            content=content,
            dry_run=dry_run,
            overwrite_existing=overwrite,
            expected_revision=expected,
        ),
        metadata=metadata("editor", user),
    )


async def test_import_reports_actions_and_problems_and_dry_run_changes_nothing(
    admin_ws: tuple[Api, str, str], canaries: Canaries
) -> None:
    api, ws, admin = admin_ws
    same, old, new, fresh = canaries("same"), canaries("old"), canaries("new"), canaries("fresh")
    await api.save(ws, admin, W, set_("SAME", same), set_("CHANGE", old), set_("KEEP", old))
    text = "\n".join(
        [
            "# exported from the old platform",
            f"SAME={same}",
            f"export CHANGE = '{new}'",
            f'KEEP="{new}"',
            f"FRESH={fresh}  # a comment",
            f"bad-key={canaries('bad')}",
            f"DUP={canaries('first')}",
            f"DUP={fresh}",
            f'UNTERMINATED="{canaries("open")}',
        ]
    )

    preview = await import_env(api, ws, admin, text, dry_run=True)
    assert preview.dry_run and preview.revision == 1
    assert {(e.key, e.action) for e in preview.entries} == {
        ("SAME", spb.IMPORT_ACTION_UNCHANGED),
        ("CHANGE", spb.IMPORT_ACTION_SKIPPED),
        ("KEEP", spb.IMPORT_ACTION_SKIPPED),
        ("FRESH", spb.IMPORT_ACTION_CREATED),
        ("DUP", spb.IMPORT_ACTION_CREATED),
    }
    assert [(p.line, p.message) for p in preview.problems] == [
        (6, "invalid key: key may only contain letters A-Z and a-z, digits 0-9 and underscore (_)"),
        (9, "unterminated double quote"),
    ]
    dup = next(e for e in preview.entries if e.key == "DUP")
    assert (dup.line, dup.note) == (8, "overrides line 7")
    assert [s.key for s in (await api.list(ws, admin)).workspace_secrets] == ["CHANGE", "KEEP", "SAME"]

    done = await import_env(api, ws, admin, text, overwrite=True)
    assert not done.dry_run and done.revision == 2
    assert {(e.key, e.action) for e in done.entries} == {
        ("SAME", spb.IMPORT_ACTION_UNCHANGED),
        ("CHANGE", spb.IMPORT_ACTION_UPDATED),
        ("KEEP", spb.IMPORT_ACTION_UPDATED),
        ("FRESH", spb.IMPORT_ACTION_CREATED),
        ("DUP", spb.IMPORT_ACTION_CREATED),
    }
    assert await value_of(api, ws, admin, "CHANGE") == new
    assert await value_of(api, ws, admin, "DUP") == fresh
    versions = {s.key: s.version for s in (await api.list(ws, admin)).workspace_secrets}
    assert versions == {"SAME": 1, "CHANGE": 2, "KEEP": 2, "FRESH": 1, "DUP": 1}


async def test_import_skips_secrets_a_write_member_may_not_change(
    admin_ws: tuple[Api, str, str], canaries: Canaries
) -> None:
    api, ws, admin = admin_ws
    writer = uid("writer")
    await api.member(ws, writer, WRITE)
    await api.save(ws, admin, W, set_("ADMINS", canaries()))
    reply = await import_env(api, ws, writer, f"ADMINS={canaries()}\nMINE={canaries()}\n", overwrite=True)
    assert [(e.key, e.action) for e in reply.entries] == [
        ("ADMINS", spb.IMPORT_ACTION_SKIPPED),
        ("MINE", spb.IMPORT_ACTION_CREATED),
    ]
    assert "ADMIN" in reply.entries[0].note
    reader = uid("reader")
    await api.member(ws, reader, READ)
    err = await status_of(import_env(api, ws, reader, f"NEW={canaries()}\n"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_import_with_a_stale_revision_writes_nothing(admin_ws: tuple[Api, str, str], canaries: Canaries) -> None:
    api, ws, admin = admin_ws
    await api.save(ws, admin, P, set_("X", canaries()), expected=0)
    err = await status_of(import_env(api, ws, admin, f"Y={canaries()}\n", scope=P, expected=0))
    assert err.code() == grpc.StatusCode.ABORTED
    assert [s.key for s in (await api.list(ws, admin)).personal_secrets] == ["X"]


async def test_ten_thousand_line_import_is_one_transaction(
    admin_ws: tuple[Api, str, str], canaries: Canaries, database_url: str
) -> None:
    api, ws, admin = admin_ws
    marker = canaries("bulk")
    text = "".join(f"KEY_{i:05d}={marker}-{i}\n" for i in range(10_000))
    reply = await import_env(api, ws, admin, text)
    assert len(reply.entries) == 10_000 and not reply.problems
    assert reply.revision == 1  # one revision step: one batch
    assert await value_of(api, ws, admin, "KEY_09999") == f"{marker}-9999"
    conn = await asyncpg.connect(database_url)
    try:
        # One transaction: every row carries the same transaction id, and one audit event.
        xids = await conn.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM secrets WHERE scope = 1 AND owner_id = $1", ws
        )
        events = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE workspace_id = $1 AND action = 'secrets.import'", ws
        )
    finally:
        await conn.close()
    assert (xids, events) == (1, 1)


# -- details, members, versions ----------------------------------------------------------------


async def test_details_members_and_the_creator_as_admin(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, boss, writer, reader = uid("ws"), uid("boss"), uid("writer"), uid("reader")
    await api.member(ws, boss, ADMIN)
    await api.member(ws, writer, WRITE)
    await api.member(ws, reader, READ)
    await api.save(ws, writer, W, set_("API", canaries()))
    md = metadata("editor", writer)

    details = (
        await api.store.UpdateSecretDetails(
            spb.UpdateSecretDetailsRequest(
                workspace_id=ws, scope=W, key="API", display_name="The API", description="d"
            ),
            metadata=md,
        )
    ).secret
    assert (details.summary.display_name, details.summary.description) == ("The API", "d")
    members = {(m.user_id, m.role, m.implicit) for m in details.members}
    assert members == {(writer, common.SECRET_ROLE_ADMIN, False), (boss, common.SECRET_ROLE_ADMIN, True)}

    details = (
        await api.store.SetSecretMember(
            spb.SetSecretMemberRequest(
                workspace_id=ws, key="API", email=f"{reader.upper()}@EXAMPLE.com", role=common.SECRET_ROLE_MEMBER
            ),
            metadata=md,
        )
    ).secret
    assert (reader, common.SECRET_ROLE_MEMBER, False) in {(m.user_id, m.role, m.implicit) for m in details.members}

    for call in (
        api.store.SetSecretMember(
            spb.SetSecretMemberRequest(
                workspace_id=ws, key="API", email=f"{boss}@example.com", role=common.SECRET_ROLE_MEMBER
            ),
            metadata=md,
        ),
        api.store.RemoveSecretMember(
            spb.RemoveSecretMemberRequest(workspace_id=ws, key="API", email=f"{boss}@example.com"), metadata=md
        ),
    ):
        assert (await status_of(call)).code() == grpc.StatusCode.FAILED_PRECONDITION
    err = await status_of(
        api.store.SetSecretMember(
            spb.SetSecretMemberRequest(
                workspace_id=ws, key="API", email="nobody@example.com", role=common.SECRET_ROLE_MEMBER
            ),
            metadata=md,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND

    details = (
        await api.store.RemoveSecretMember(
            spb.RemoveSecretMemberRequest(workspace_id=ws, key="API", email=f"{reader}@example.com"), metadata=md
        )
    ).secret
    assert reader not in {m.user_id for m in details.members}


async def test_last_ten_versions_are_kept_and_restore_makes_a_new_version(
    admin_ws: tuple[Api, str, str], canaries: Canaries
) -> None:
    api, ws, admin = admin_ws
    values = [canaries(f"v{i}") for i in range(1, 13)]
    for value in values:
        await api.save(ws, admin, W, set_("ROTATING", value))
    md = metadata("editor", admin)
    details = (
        await api.store.GetSecret(spb.GetSecretRequest(workspace_id=ws, scope=W, key="ROTATING"), metadata=md)
    ).secret
    assert [v.version for v in details.versions] == list(range(12, 2, -1))
    assert [v.current for v in details.versions][:2] == [True, False]

    err = await status_of(
        api.store.RestoreSecretVersion(
            spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="ROTATING", version=2), metadata=md
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND  # pruned
    err = await status_of(
        api.store.RestoreSecretVersion(
            spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="ROTATING", version=12), metadata=md
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # already current

    restored = (
        await api.store.RestoreSecretVersion(
            spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="ROTATING", version=5), metadata=md
        )
    ).secret
    assert restored.summary.version == 13
    assert [v.version for v in restored.versions] == list(range(13, 3, -1))
    assert await value_of(api, ws, admin, "ROTATING") == values[4]


# -- lookups for the editor --------------------------------------------------------------------


async def test_list_referenceable_groups_marks_shadowing_and_filters(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, boss, user = uid("ws"), uid("boss"), uid("user")
    await api.member(ws, boss, ADMIN)
    await api.member(ws, user, READ)
    await api.save(ws, boss, W, set_("DB_URL", canaries()), set_("DB_PASS", canaries()), set_("OTHER", canaries()))
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="DB_PASS", restricted=True),
        metadata=metadata("editor", boss),
    )
    await api.save(ws, user, P, set_("DB_URL", canaries()), set_("DB_PASS", canaries()), set_("DB_MINE", canaries()))

    reply = await api.store.ListReferenceable(
        spb.ListReferenceableRequest(workspace_id=ws, prefix="DB_"), metadata=metadata("editor", user)
    )
    assert [k.key for k in reply.workspace] == ["DB_URL"]  # the restricted one is not usable by this user
    assert [(k.key, k.shadowed) for k in reply.personal] == [("DB_MINE", False), ("DB_PASS", False), ("DB_URL", True)]

    reply = await api.store.ListReferenceable(
        spb.ListReferenceableRequest(workspace_id=ws), metadata=metadata("editor", boss)
    )
    assert [k.key for k in reply.workspace] == ["DB_PASS", "DB_URL", "OTHER"]


async def test_explain_references_says_what_would_resolve_and_why_not(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, boss, user = uid("ws"), uid("boss"), uid("user")
    await api.member(ws, boss, ADMIN)
    await api.member(ws, user, READ)
    await api.save(ws, boss, W, set_("SHARED", canaries()), set_("LOCKED", canaries()))
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="LOCKED", restricted=True),
        metadata=metadata("editor", boss),
    )
    await api.save(ws, user, P, set_("MINE", canaries()))
    await api.save(ws, user, P, set_("MINE", canaries()))

    reply = await api.store.ExplainReferences(
        spb.ExplainReferencesRequest(
            workspace_id=ws,
            trigger=common.TRIGGER_MANUAL,
            blocks=[
                common.BlockInputs(
                    block_id="b1",
                    inputs=struct({"a": "{{SHARED}}", "b": ["x", "{{MINE}} {{LOCKED}}"], "c": "{{NOWHERE}}"}),
                )
            ],
        ),
        metadata=metadata("editor", user),
    )
    assert reply.run_user_id == user
    got = [(r.field_path, r.key, r.scope, r.version, r.problem) for r in reply.references]
    assert got == [
        ("a", "SHARED", W, 1, 0),
        ("b[1]", "MINE", P, 2, 0),
        ("b[1]", "LOCKED", 0, 0, common.BLOCK_ERROR_CODE_SECRET_NOT_PERMITTED),
        ("c", "NOWHERE", 0, 0, common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND),
    ]

    # Explaining a scheduled run of another owner: their personal secret decides, its version is hidden.
    reply = await api.store.ExplainReferences(
        spb.ExplainReferencesRequest(
            workspace_id=ws,
            trigger=common.TRIGGER_SCHEDULE,
            workflow_owner_id=user,
            blocks=[common.BlockInputs(block_id="b1", inputs=struct({"a": "{{MINE}}"}))],
        ),
        metadata=metadata("editor", boss),
    )
    assert [(r.scope, r.version) for r in reply.references] == [(P, 0)]


# -- directory ---------------------------------------------------------------------------------


async def test_removing_a_member_takes_away_every_use_in_one_step(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, boss, leaver = uid("ws"), uid("boss"), uid("leaver")
    await api.member(ws, boss, ADMIN)
    await api.member(ws, leaver, READ)
    await api.save(ws, boss, W, set_("TEAM", canaries()))
    await api.store.SetSecretMember(
        spb.SetSecretMemberRequest(
            workspace_id=ws, key="TEAM", email=f"{leaver}@example.com", role=common.SECRET_ROLE_MEMBER
        ),
        metadata=metadata("editor", boss),
    )
    await api.save(ws, leaver, P, set_("OWN", canaries()))
    before = await api.resolve(ws, {"b": {"t": "{{TEAM}}", "o": "{{OWN}}"}}, user=leaver)
    assert not before.blocks[0].HasField("error")

    removed = await api.directory.RemoveWorkspaceMember(
        dpb.RemoveWorkspaceMemberRequest(workspace_id=ws, user_id=leaver), metadata=metadata("directory")
    )
    assert (removed.removed, removed.secret_memberships_removed) == (True, 1)

    for key in ("TEAM", "OWN"):
        after = await api.resolve(ws, {"b": {"v": "{{" + key + "}}"}}, user=leaver)
        assert after.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND
    details = await api.store.GetSecret(
        spb.GetSecretRequest(workspace_id=ws, scope=W, key="TEAM"), metadata=metadata("editor", boss)
    )
    assert leaver not in {m.user_id for m in details.secret.members}
    members = await api.directory.ListWorkspaceMembers(
        dpb.ListWorkspaceMembersRequest(workspace_id=ws), metadata=metadata("directory")
    )
    assert [m.user_id for m in members.members] == [boss]
    err = await status_of(
        api.directory.RemoveWorkspaceMember(
            dpb.RemoveWorkspaceMemberRequest(workspace_id=ws, user_id=leaver), metadata=metadata("directory")
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # Their personal secrets still exist for them elsewhere; only their use here ended.
    other = uid("ws")
    await api.member(other, leaver, READ)
    elsewhere = await api.resolve(other, {"b": {"v": "{{OWN}}"}}, user=leaver)
    assert not elsewhere.blocks[0].HasField("error")


async def test_a_refused_save_leaves_no_data_key_behind(recorded_api: Api, database_url: str) -> None:
    api = recorded_api
    made_up, outsider = uid("ws"), uid("outsider")
    err = await status_of(api.save(made_up, outsider, W, set_("K", "v"), expected=0))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM data_keys WHERE tenant_id = $1", made_up) == 0
    finally:
        await conn.close()

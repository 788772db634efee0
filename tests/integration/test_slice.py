"""The first vertical slice, end to end through a real server on port 0 and a real Postgres."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, Api, P, W, delete, set_, status_of, to_dict, uid
from tests.conftest import metadata


@pytest.fixture
def api(channel: grpc.aio.Channel) -> Api:
    return Api(channel)


async def test_saved_workspace_secret_resolves_whole_and_embedded_in_nested_inputs(api: Api) -> None:
    ws, alice = uid("ws"), uid("alice")
    await api.member(ws, alice, ADMIN)
    await api.save(ws, alice, W, set_("TOKEN", "tok-123"), set_("HOST", "db.internal"))

    reply = await api.resolve(
        ws,
        {
            "call": {
                "auth": "{{TOKEN}}",
                "headers": {"Authorization": "Bearer {{ TOKEN }}"},
                "messages": [{"content": "x"}, {"content": "y"}, {"content": "connect to {{HOST}}:5432"}],
                "count": 3,
                "plain": "no references",
            }
        },
        user=alice,
    )
    (block,) = reply.blocks
    assert not block.HasField("error")
    assert to_dict(block.inputs) == {
        "auth": "tok-123",
        "headers": {"Authorization": "Bearer tok-123"},
        "messages": [{"content": "x"}, {"content": "y"}, {"content": "connect to db.internal:5432"}],
        "count": 3.0,
        "plain": "no references",
    }
    assert sorted((r.field_path, r.key, r.scope, r.version) for r in block.references) == [
        ("auth", "TOKEN", W, 1),
        ("headers.Authorization", "TOKEN", W, 1),
        ("messages[2].content", "HOST", W, 1),
    ]


async def test_workspace_secret_wins_over_personal_and_personal_fills_the_rest(api: Api) -> None:
    ws, bob = uid("ws"), uid("bob")
    await api.member(ws, bob, ADMIN)
    await api.save(ws, bob, W, set_("KEY", "from-workspace"))
    await api.save(ws, bob, P, set_("KEY", "from-personal"), set_("MINE", "only-personal"))

    reply = await api.resolve(ws, {"b": {"a": "{{KEY}}", "b": "{{MINE}}"}}, user=bob)

    assert to_dict(reply.blocks[0].inputs) == {"a": "from-workspace", "b": "only-personal"}
    scopes = {r.key: r.scope for r in reply.blocks[0].references}
    assert scopes == {"KEY": W, "MINE": P}


@pytest.mark.parametrize("trigger", [common.TRIGGER_API, common.TRIGGER_WEBHOOK, common.TRIGGER_SCHEDULE])
async def test_automated_runs_fall_back_to_the_workflow_owner(api: Api, trigger: int) -> None:
    ws, owner, clicker = uid("ws"), uid("owner"), uid("clicker")
    await api.member(ws, owner, READ)
    await api.member(ws, clicker, READ)
    await api.save(ws, owner, P, set_("OWNER_KEY", "owner-value"))
    await api.save(ws, clicker, P, set_("OWNER_KEY", "clicker-value"))

    reply = await api.resolve(ws, {"b": {"v": "{{OWNER_KEY}}"}}, trigger=trigger, user=clicker, owner=owner)

    assert to_dict(reply.blocks[0].inputs) == {"v": "owner-value"}
    assert reply.run_user_id == owner


async def test_manual_run_falls_back_to_the_user_who_clicked_run(api: Api) -> None:
    ws, owner, clicker = uid("ws"), uid("owner"), uid("clicker")
    await api.member(ws, owner, READ)
    await api.member(ws, clicker, READ)
    await api.save(ws, owner, P, set_("K", "owner-value"))
    await api.save(ws, clicker, P, set_("K", "clicker-value"))

    reply = await api.resolve(ws, {"b": {"v": "{{K}}"}}, trigger=common.TRIGGER_MANUAL, user=clicker, owner=owner)

    assert to_dict(reply.blocks[0].inputs) == {"v": "clicker-value"}


async def test_missing_secret_fails_only_its_block_naming_block_field_and_key(api: Api) -> None:
    ws, carol = uid("ws"), uid("carol")
    await api.member(ws, carol, ADMIN)
    await api.save(ws, carol, W, set_("PRESENT", "here"))

    reply = await api.resolve(
        ws, {"ok": {"v": "{{PRESENT}}"}, "broken": {"headers": {"X": "key {{ABSENT}}"}}}, user=carol
    )

    ok, broken = reply.blocks
    assert ok.block_id == "ok" and to_dict(ok.inputs) == {"v": "here"}
    assert broken.block_id == "broken"
    assert not broken.HasField("inputs") and not broken.references
    assert broken.error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND
    assert (broken.error.key, broken.error.field_path) == ("ABSENT", "headers.X")
    assert "'broken'" in broken.error.message and "headers.X" in broken.error.message
    assert "ABSENT" in broken.error.message and broken.error.message.startswith("SECRET_NOT_FOUND")


async def test_deleted_secret_no_longer_resolves(api: Api) -> None:
    ws, dan = uid("ws"), uid("dan")
    await api.member(ws, dan, ADMIN)
    await api.save(ws, dan, W, set_("GONE", "soon"))
    saved = await api.save(ws, dan, W, delete("GONE"))
    assert [(s.key, s.action) for s in saved.saved] == [("GONE", spb.SAVE_ACTION_DELETED)]

    reply = await api.resolve(ws, {"b": {"v": "{{GONE}}"}}, user=dan)

    assert reply.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND


async def test_list_secrets_returns_metadata_and_revisions_never_values(api: Api) -> None:
    ws, erin = uid("ws"), uid("erin")
    await api.member(ws, erin, ADMIN)
    await api.save(ws, erin, W, set_("A", "value-a-canary"), set_("B", "value-b-canary"))
    await api.save(ws, erin, P, set_("A", "personal-canary"))

    listing = await api.list(ws, erin)

    assert [s.key for s in listing.workspace_secrets] == ["A", "B"]
    assert [(s.key, s.shadowed) for s in listing.personal_secrets] == [("A", True)]
    assert listing.workspace_revision == 1 and listing.personal_revision == 1
    assert all(s.updated_by == erin and s.version == 1 for s in listing.workspace_secrets)
    assert b"canary" not in listing.SerializeToString()


async def test_save_batch_is_atomic_and_stale_revision_is_aborted(api: Api) -> None:
    ws, fay = uid("ws"), uid("fay")
    await api.member(ws, fay, ADMIN)
    first = await api.save(ws, fay, W, set_("X", "1"), expected=0)
    assert first.revision == 1

    err = await status_of(api.save(ws, fay, W, set_("Y", "2"), expected=0))
    assert err.code() == grpc.StatusCode.ABORTED
    assert "current revision 1" in (err.details() or "")

    # One bad change rejects the whole batch: X keeps version 1 and Z is not created.
    err = await status_of(api.save(ws, fay, W, set_("X", "new"), set_("Z", "z"), delete("NOPE"), expected=1))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    listing = await api.list(ws, fay)
    assert [(s.key, s.version) for s in listing.workspace_secrets] == [("X", 1)]
    assert listing.workspace_revision == 1


async def test_invalid_changes_get_invalid_argument_with_a_violation_each(api: Api) -> None:
    ws, gus = uid("ws"), uid("gus")
    await api.member(ws, gus, ADMIN)

    err = await status_of(api.save(ws, gus, W, set_("bad-key", "v"), set_("OK", ""), expected=0))

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["changes[0].key", "changes[1].value"]


async def test_editor_principal_calling_resolver_is_permission_denied(api: Api) -> None:
    err = await status_of(
        api.resolver.ResolveInputs(
            rpb.ResolveInputsRequest(workspace_id="ws", trigger=common.TRIGGER_MANUAL, triggering_user_id="u"),
            metadata=metadata("editor", "u"),
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("md", "code"),
    [
        ([], grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Bearer wrong-token")], grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Basic dGVzdA==")], grpc.StatusCode.UNAUTHENTICATED),
        (metadata("editor"), grpc.StatusCode.UNAUTHENTICATED),  # editor calls need x-user-id
        (metadata("executor", "u"), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_secret_store_refuses_calls_without_the_right_credentials(
    api: Api, md: list[tuple[str, str]], code: grpc.StatusCode
) -> None:
    err = await status_of(api.store.ListSecrets(spb.ListSecretsRequest(workspace_id="ws"), metadata=md))
    assert err.code() == code


async def test_health_and_reflection_need_no_token(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="secrets.v1.Resolver"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_run_user_must_be_a_workspace_member(api: Api) -> None:
    ws, member, outsider = uid("ws"), uid("member"), uid("outsider")
    await api.member(ws, member, ADMIN)
    await api.save(ws, member, W, set_("SHARED", "v"))

    reply = await api.resolve(ws, {"b": {"v": "{{SHARED}}"}}, user=outsider)

    assert reply.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND
    assert "not a member" in reply.blocks[0].error.message


async def test_manual_run_without_triggering_user_is_invalid_argument(api: Api) -> None:
    err = await status_of(api.resolve("ws", {"b": {"v": "x"}}, trigger=common.TRIGGER_MANUAL, owner="o"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await status_of(api.resolve("ws", {"b": {"v": "x"}}, trigger=common.TRIGGER_API, user="u"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

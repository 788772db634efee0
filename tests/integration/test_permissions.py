"""SPEC 2.2 cell by cell: every action against every kind of caller, with the expected status.

Each case builds its own workspace, so no case depends on another's leftovers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, WRITE, Api, P, W, delete, rename, set_, status_of, uid
from tests.conftest import metadata
from tests.integration.conftest import Canaries

OK = "ok"
PD = grpc.StatusCode.PERMISSION_DENIED
NF = grpc.StatusCode.NOT_FOUND
NOT_FOUND = "SECRET_NOT_FOUND"
NOT_PERMITTED = "SECRET_NOT_PERMITTED"

CALLERS = ["read", "write", "admin", "external", "outsider", "secret_admin", "secret_member"]


@dataclass
class World:
    ws: str
    users: dict[str, str]
    api: Api
    canaries: Canaries

    def user(self, caller: str) -> str:
        return self.users[caller]


async def make_world(api: Api, canaries: Canaries, restricted: bool = False) -> World:
    ws = uid("ws")
    users = {c: uid(c) for c in CALLERS}
    permissions = {
        "read": READ,
        "write": WRITE,
        "admin": ADMIN,
        "external": READ,
        "secret_admin": WRITE,
        "secret_member": READ,
    }
    for caller, permission in permissions.items():
        await api.member(ws, users[caller], permission, external=caller == "external")
    await api.save(ws, users["admin"], W, set_("TARGET", canaries("target")))
    store = api.store
    md = metadata("editor", users["admin"])
    for who, role in (("secret_admin", common.SECRET_ROLE_ADMIN), ("secret_member", common.SECRET_ROLE_MEMBER)):
        await store.SetSecretMember(
            spb.SetSecretMemberRequest(workspace_id=ws, key="TARGET", email=f"{users[who]}@example.com", role=role),
            metadata=md,
        )
    if restricted:
        await store.UpdateSecretDetails(
            spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="TARGET", restricted=True), metadata=md
        )
    return World(ws, users, api, canaries)


Action = Callable[[World, str], Awaitable[object]]


async def see_listed(w: World, caller: str) -> object:
    listing = await w.api.list(w.ws, w.user(caller))
    assert [s.key for s in listing.workspace_secrets] == ["TARGET"]
    return OK


async def use_in_run(w: World, caller: str) -> object:
    reply = await w.api.resolve(w.ws, {"b": {"v": "{{TARGET}}"}}, user=w.user(caller))
    block = reply.blocks[0]
    if block.HasField("error"):
        return common.BlockErrorCode.Name(block.error.code).removeprefix("BLOCK_ERROR_CODE_")
    return OK


async def create_key(w: World, caller: str) -> object:
    return await w.api.save(w.ws, w.user(caller), W, set_("NEW_KEY", w.canaries("new")))


async def change_value(w: World, caller: str) -> object:
    return await w.api.save(w.ws, w.user(caller), W, set_("TARGET", w.canaries("changed")))


async def rename_key(w: World, caller: str) -> object:
    return await w.api.save(w.ws, w.user(caller), W, rename("TARGET", "RENAMED"))


async def delete_key(w: World, caller: str) -> object:
    return await w.api.save(w.ws, w.user(caller), W, delete("TARGET"))


async def edit_details(w: World, caller: str) -> object:
    return await w.api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=w.ws, scope=W, key="TARGET", description="new words"),
        metadata=metadata("editor", w.user(caller)),
    )


async def manage_members(w: World, caller: str) -> object:
    return await w.api.store.SetSecretMember(
        spb.SetSecretMemberRequest(
            workspace_id=w.ws, key="TARGET", email=f"{w.user('read')}@example.com", role=common.SECRET_ROLE_MEMBER
        ),
        metadata=metadata("editor", w.user(caller)),
    )


async def restore_version(w: World, caller: str) -> object:
    await w.api.save(w.ws, w.user("admin"), W, set_("TARGET", w.canaries("v2")))
    return await w.api.store.RestoreSecretVersion(
        spb.RestoreSecretVersionRequest(workspace_id=w.ws, scope=W, key="TARGET", version=1),
        metadata=metadata("editor", w.user(caller)),
    )


async def see_details(w: World, caller: str) -> object:
    return await w.api.store.GetSecret(
        spb.GetSecretRequest(workspace_id=w.ws, scope=W, key="TARGET"), metadata=metadata("editor", w.user(caller))
    )


#            read  write  admin  external outsider secret_admin secret_member
TABLE: dict[str, tuple[Action, bool, list[object]]] = {
    "see listed": (see_listed, False, [OK, OK, OK, OK, PD, OK, OK]),
    "see details": (see_details, False, [OK, OK, OK, OK, PD, OK, OK]),
    "use in run": (use_in_run, False, [OK, OK, OK, OK, NOT_FOUND, OK, OK]),
    "use restricted in run": (use_in_run, True, [NOT_PERMITTED, NOT_PERMITTED, OK, NOT_PERMITTED, NOT_FOUND, OK, OK]),
    "create a new key": (create_key, False, [PD, OK, OK, PD, PD, OK, PD]),
    "change value": (change_value, False, [PD, PD, OK, PD, PD, OK, PD]),
    "rename": (rename_key, False, [PD, PD, OK, PD, PD, OK, PD]),
    "delete": (delete_key, False, [PD, PD, OK, PD, PD, OK, PD]),
    "edit details": (edit_details, False, [PD, PD, OK, PD, PD, OK, PD]),
    "manage members": (manage_members, False, [PD, PD, OK, PD, PD, OK, PD]),
    "restore a version": (restore_version, False, [PD, PD, OK, PD, PD, OK, PD]),
}
CASES = [
    pytest.param(action, restricted, caller, expected, id=f"{name}-{caller}")
    for name, (action, restricted, row) in TABLE.items()
    for caller, expected in zip(CALLERS, row, strict=True)
]


@pytest.mark.parametrize(("action", "restricted", "caller", "expected"), CASES)
async def test_workspace_secret_permissions(
    recorded_api: Api, canaries: Canaries, action: Action, restricted: bool, caller: str, expected: object
) -> None:
    world = await make_world(recorded_api, canaries, restricted)
    try:
        outcome = await action(world, caller)
    except grpc.aio.AioRpcError as err:
        outcome = err.code()
    assert (OK if not isinstance(outcome, (str, grpc.StatusCode)) else outcome) == expected


async def test_personal_secrets_are_the_owners_alone(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, owner, stranger = uid("ws"), uid("owner"), uid("stranger")
    await api.member(ws, owner, READ)
    await api.member(ws, stranger, ADMIN)  # even a workspace admin
    # The owner can create, change, rename, delete and restore, with only READ in the workspace.
    await api.save(ws, owner, P, set_("MINE", canaries("p1")), set_("OTHER", canaries("p2")))
    await api.save(ws, owner, P, set_("MINE", canaries("p3")), rename("OTHER", "OTHER2"))
    await api.store.RestoreSecretVersion(
        spb.RestoreSecretVersionRequest(workspace_id=ws, scope=P, key="MINE", version=1),
        metadata=metadata("editor", owner),
    )
    await api.save(ws, owner, P, delete("OTHER2"))

    # A stranger does not see it, cannot address it, and cannot use it in a run.
    assert [s.key for s in (await api.list(ws, stranger)).personal_secrets] == []
    err = await status_of(
        api.store.GetSecret(
            spb.GetSecretRequest(workspace_id=ws, scope=P, key="MINE"), metadata=metadata("editor", stranger)
        )
    )
    assert err.code() == NF
    reply = await api.resolve(ws, {"b": {"v": "{{MINE}}"}}, user=stranger)
    assert reply.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND
    # The owner's own run uses it.
    reply = await api.resolve(ws, {"b": {"v": "{{MINE}}"}}, user=owner)
    assert not reply.blocks[0].HasField("error")


async def test_personal_secrets_cannot_be_shared_or_restricted(recorded_api: Api, canaries: Canaries) -> None:
    api = recorded_api
    ws, owner = uid("ws"), uid("owner")
    await api.member(ws, owner, ADMIN)
    await api.save(ws, owner, P, set_("MINE", canaries()))
    err = await status_of(
        api.store.UpdateSecretDetails(
            spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=P, key="MINE", restricted=True),
            metadata=metadata("editor", owner),
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Members are managed on workspace secrets only: a personal key is not found there.
    err = await status_of(
        api.store.SetSecretMember(
            spb.SetSecretMemberRequest(
                workspace_id=ws, key="MINE", email=f"{owner}@example.com", role=common.SECRET_ROLE_MEMBER
            ),
            metadata=metadata("editor", owner),
        )
    )
    assert err.code() == NF

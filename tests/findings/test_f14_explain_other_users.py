"""Finding 14: ExplainReferences let any member probe other users' personal key names.

Any triggering_user_id was accepted, so a READ member learned which personal secrets another
member has. Explaining another user's run is for workspace admins and that user alone.
"""

from __future__ import annotations

import grpc
import pytest

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, Api, P, set_, status_of, struct, uid
from tests.conftest import metadata


def _explain(
    api: Api, ws: str, caller: str, *, user: str = "", owner: str = "", trigger: int = common.TRIGGER_MANUAL
) -> object:
    return api.store.ExplainReferences(
        spb.ExplainReferencesRequest(
            workspace_id=ws,
            trigger=trigger,
            triggering_user_id=user,
            workflow_owner_id=owner,
            blocks=[common.BlockInputs(block_id="b", inputs=struct({"v": "{{HIS_KEY}}"}))],
        ),
        metadata=metadata("editor", caller),
    )


@pytest.fixture
async def world(channel: grpc.aio.Channel) -> tuple[Api, str, dict[str, str]]:
    api = Api(channel)
    ws = uid("ws")
    users = {"admin": uid("admin"), "reader": uid("reader"), "victim": uid("victim")}
    await api.member(ws, users["admin"], ADMIN)
    await api.member(ws, users["reader"], READ)
    await api.member(ws, users["victim"], READ)
    await api.save(ws, users["victim"], P, set_("HIS_KEY", "his-value"))
    return api, ws, users


async def test_f14_a_member_cannot_explain_another_users_run(world: tuple[Api, str, dict[str, str]]) -> None:
    api, ws, users = world
    err = await status_of(_explain(api, ws, users["reader"], user=users["victim"]))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await status_of(_explain(api, ws, users["reader"], owner=users["victim"], trigger=common.TRIGGER_SCHEDULE))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_f14_an_admin_and_the_user_themself_may(world: tuple[Api, str, dict[str, str]]) -> None:
    api, ws, users = world
    by_admin = await _explain(api, ws, users["admin"], user=users["victim"])
    assert by_admin.references[0].scope == common.SCOPE_PERSONAL  # type: ignore[attr-defined]
    by_self = await _explain(api, ws, users["victim"], user=users["victim"])
    assert by_self.references[0].scope == common.SCOPE_PERSONAL  # type: ignore[attr-defined]
    own_run = await _explain(api, ws, users["reader"])
    assert own_run.references[0].problem == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND  # type: ignore[attr-defined]

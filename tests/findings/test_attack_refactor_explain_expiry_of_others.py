"""ExplainReferences of another user's run (workspace admins only) shows that the run user's
personal secret exists, since it decides the run, but not its metadata: the version stays 0
(SPEC 2.2, README "The API"). An expired personal secret's explanation quoted its expiry time
("SECRET_EXPIRED: the personal secret expired at 2001-09-09T01:46:40Z"), which is that user's
metadata as much as the version is. The run user explaining their own run, and anyone explaining
a workspace secret (whose expiry every member lists), still see the time."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, Api, P, W, set_, struct, uid
from tests.conftest import metadata

WHEN = 1_000_000_000  # 2001-09-09T01:46:40Z
SHOWN = "2001-09-09T01:46:40Z"


async def expire(api: Api, ws: str, user: str, scope: int, key: str) -> None:
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(
            workspace_id=ws, scope=scope, key=key, expires_at=timestamp_pb2.Timestamp(seconds=WHEN)
        ),
        metadata=metadata("editor", user),
    )


async def explain(api: Api, ws: str, caller: str, run_user: str, key: str) -> spb.ExplainReferencesResponse:
    return await api.store.ExplainReferences(
        spb.ExplainReferencesRequest(
            workspace_id=ws,
            trigger=common.TRIGGER_MANUAL,
            triggering_user_id=run_user,
            blocks=[common.BlockInputs(block_id="b", inputs=struct({"a": "{{" + key + "}}"}))],
        ),
        metadata=metadata("editor", caller),
    )


async def test_an_admin_explaining_another_users_run_does_not_see_their_personal_secrets_expiry(
    channel: grpc.aio.Channel,
) -> None:
    api = Api(channel)
    ws, admin, other = uid("ws"), uid("admin"), uid("other")
    await api.member(ws, admin, ADMIN)
    await api.member(ws, other, READ)
    await api.save(ws, other, P, set_("MINE", "personal-value"))
    await expire(api, ws, other, P, "MINE")
    await api.save(ws, admin, W, set_("SHARED", "workspace-value"))
    await expire(api, ws, admin, W, "SHARED")

    theirs = (await explain(api, ws, admin, other, "MINE")).references[0]
    assert theirs.problem == common.BLOCK_ERROR_CODE_SECRET_EXPIRED
    assert "personal secret expired" in theirs.message
    assert SHOWN not in theirs.message

    own = (await explain(api, ws, other, other, "MINE")).references[0]
    assert own.problem == common.BLOCK_ERROR_CODE_SECRET_EXPIRED
    assert SHOWN in own.message

    shared = (await explain(api, ws, admin, other, "SHARED")).references[0]
    assert shared.problem == common.BLOCK_ERROR_CODE_SECRET_EXPIRED
    assert SHOWN in shared.message

"""Finding 13: ListSecrets said a personal secret was shadowed when it was the one that wins.

A user who may not use a restricted workspace secret saw their personal secret of the same key
marked `shadowed`, while their runs resolved it and ListReferenceable said not shadowed. One
function (service.domain.resolution.shadowed_keys, built on `decide`) now decides for all three.
"""

from __future__ import annotations

import grpc

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, WRITE, Api, P, W, set_, to_dict, uid
from tests.conftest import metadata


async def test_f13_listings_and_resolution_agree_on_shadowing(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, admin, user = uid("ws"), uid("admin"), uid("user")
    await api.member(ws, admin, ADMIN)
    await api.member(ws, user, WRITE)
    await api.save(ws, admin, W, set_("TOKEN", "workspace-value"), set_("OPEN", "workspace-open"))
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="TOKEN", restricted=True),
        metadata=metadata("editor", admin),
    )
    await api.save(ws, user, P, set_("TOKEN", "personal-value"), set_("OPEN", "personal-open"))

    reply = await api.resolve(ws, {"b": {"t": "{{TOKEN}}", "o": "{{OPEN}}"}}, user=user)
    assert to_dict(reply.blocks[0].inputs) == {"t": "personal-value", "o": "workspace-open"}

    listing = await api.list(ws, user)
    listed = {s.key: s.shadowed for s in listing.personal_secrets}
    referenceable = await api.store.ListReferenceable(
        spb.ListReferenceableRequest(workspace_id=ws), metadata=metadata("editor", user)
    )
    offered = {k.key: k.shadowed for k in referenceable.personal}
    used = {r.key: r.scope for r in reply.blocks[0].references}
    for key in ("TOKEN", "OPEN"):
        wins_workspace = used[key] == common.SCOPE_WORKSPACE
        assert listed[key] is wins_workspace, key
        assert offered[key] is wins_workspace, key

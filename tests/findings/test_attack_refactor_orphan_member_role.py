"""GetSecret lists a secret's explicit members with their own role. "One home per rule" (ce9d313)
moved the implicit-admin rule to policy.effective_role, which answers None for someone with no
workspace permission, and the member list then showed `effective_role(...) or MEMBER`: an
explicit secret ADMIN whose workspace membership is gone was listed as MEMBER, where the code
before the refactor listed their own role (ADMIN).

Such a row exists when SetSecretMember (or a save creating the secret, whose creator becomes its
ADMIN) commits beside a RemoveWorkspaceMember of the same user: neither locks the workspace
member row, and secret_members has no foreign key to workspace_members. The race is made here by
writing the row the losing transaction leaves behind."""

from __future__ import annotations

import asyncpg
import grpc

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, Api, W, set_, uid
from tests.conftest import Server, metadata


async def test_an_explicit_secret_admin_without_workspace_membership_keeps_their_role_in_get_secret(
    server: Server, channel: grpc.aio.Channel
) -> None:
    api = Api(channel)
    ws, admin, gone = uid("ws"), uid("admin"), uid("gone")
    await api.member(ws, admin, ADMIN)
    await api.save(ws, admin, W, set_("KEY", "value-1"))
    conn = await asyncpg.connect(server.settings.database_url)
    try:
        secret_id = await conn.fetchval("SELECT id FROM secrets WHERE scope = 1 AND owner_id = $1 AND key = 'KEY'", ws)
        await conn.execute(
            "INSERT INTO secret_members (secret_id, user_id, role, added_by) VALUES ($1, $2, 1, $3)",
            secret_id,
            gone,
            admin,
        )
    finally:
        await conn.close()

    reply = await api.store.GetSecret(
        spb.GetSecretRequest(workspace_id=ws, scope=W, key="KEY"), metadata=metadata("editor", admin)
    )
    roles = {m.user_id: (m.role, m.implicit) for m in reply.secret.members}
    assert roles[admin] == (common.SECRET_ROLE_ADMIN, True)
    assert roles[gone] == (common.SECRET_ROLE_ADMIN, False)

"""A grant-only executor scoped to some workspaces resolves with a grant of one of them while
leaving workspace_id empty, as the README and the client document ("fields 1-6 may be left
empty"; `executor.resolve("", blocks, grant=...)`). The generic scope check read only the
request's workspace_id, so the empty one was refused as "a call that names no workspace" before
the grant was read. A grant of a workspace outside the scope is still refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from service.auth import hash_token
from service.config import Settings
from service.crypto.keyring import write_private_json
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.server import start
from tests.api import ADMIN, Api, W, set_, struct, to_dict, uid
from tests.conftest import TOKENS

SCOPED = "scoped-grant-only-executor-token"
ORCHESTRATOR = "orchestrator-token"


def md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
async def api(database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path) -> AsyncIterator[Api]:
    _, keyring, _ = secrets_files
    principals = tmp_path / "principals.json"
    entries = [
        {
            "name": "team-pool",
            "roles": ["executor"],
            "token_sha256": hash_token(SCOPED),
            "requires_grant": True,
            "workspaces": ["team-*"],
        },
        {"name": "orchestrator", "roles": ["orchestrator"], "token_sha256": hash_token(ORCHESTRATOR)},
        {"name": "test-editor", "roles": ["editor"], "token_sha256": hash_token(TOKENS["editor"])},
        {"name": "test-directory", "roles": ["directory"], "token_sha256": hash_token(TOKENS["directory"])},
    ]
    write_private_json(principals, {"principals": entries})
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        data_dir=tmp_path / "d",
        keyring_file=keyring,
        principals_file=principals,
    )
    running = await start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Api(channel)
    finally:
        await running.stop(grace=1)


async def grant_for(api: Api, ws: str, user: str) -> str:
    request = rpb.IssueRunGrantRequest(
        workspace_id=ws,
        workflow_id="wf-1",
        execution_id=uid("exec"),
        trigger=common.TRIGGER_MANUAL,
        triggering_user_id=user,
    )
    return (await api.resolver.IssueRunGrant(request, metadata=md(ORCHESTRATOR))).grant


def resolve(api: Api, grant: str, workspace_id: str = "") -> object:
    request = rpb.ResolveInputsRequest(
        grant=grant,
        workspace_id=workspace_id,
        blocks=[common.BlockInputs(block_id="b", inputs=struct({"k": "{{SHARED}}"}))],
    )
    return api.resolver.ResolveInputs(request, metadata=md(SCOPED))


async def test_a_scoped_executor_resolves_with_a_grant_of_its_workspace_and_no_workspace_id(api: Api) -> None:
    user = uid("user")
    inside, outside = uid("team-"), uid("other-")
    for ws in (inside, outside):
        await api.member(ws, user, ADMIN)
        await api.save(ws, user, W, set_("SHARED", f"value-of-{ws}"))

    reply = await resolve(api, await grant_for(api, inside, user))  # type: ignore[misc]
    assert to_dict(reply.blocks[0].inputs) == {"k": f"value-of-{inside}"}

    for workspace_id in ("", outside, inside):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await resolve(api, await grant_for(api, outside, user), workspace_id)  # type: ignore[misc]
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

"""Principals scoped to workspaces (SPEC 4.3; issue 14, part 1): a principal with
`"workspaces": [...]` is refused on every other workspace, for every role and every RPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from service.auth import Principals, PrincipalsError, hash_token
from service.config import Settings
from service.crypto.keyring import write_private_json
from service.domain.policy import principal_may_use_workspace
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import directory_pb2 as dpb
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from service.server import Running, start
from tests.api import ADMIN, Api, W, set_, struct, to_dict, uid

SCOPED = "scoped-token"
ALL_ROLES = ["editor", "executor", "directory", "ops"]


def test_patterns_match_exact_ids_and_prefixes_only() -> None:
    patterns = ("team-*", "solo")
    assert principal_may_use_workspace(patterns, "team-a")
    assert principal_may_use_workspace(patterns, "solo")
    assert not principal_may_use_workspace(patterns, "solo-2")
    assert not principal_may_use_workspace(patterns, "other")
    assert not principal_may_use_workspace(patterns, "")
    assert principal_may_use_workspace(None, "")


@pytest.mark.parametrize("workspaces", [[], "team-*", ["*"], ["a*b"], [""], ["x\n"], [1]])
def test_a_malformed_scope_makes_the_file_invalid(workspaces: Any) -> None:
    entry = {"name": "p", "roles": ["editor"], "token_sha256": hash_token("t"), "workspaces": workspaces}
    with pytest.raises(PrincipalsError):
        Principals.from_json({"principals": [entry]})


@pytest.fixture
async def scoped_server(
    database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path
) -> AsyncIterator[Running]:
    _, keyring, _ = secrets_files
    principals = tmp_path / "principals.json"
    write_private_json(
        principals,
        {
            "principals": [
                {"name": "scoped", "roles": ALL_ROLES, "token_sha256": hash_token(SCOPED), "workspaces": ["team-*"]},
                {"name": "setup", "roles": ALL_ROLES, "token_sha256": hash_token("setup-token")},
            ]
        },
    )
    running = await start(
        Settings(
            listen="127.0.0.1:0",
            database_url=database_url,
            data_dir=tmp_path / "d",
            keyring_file=keyring,
            principals_file=principals,
        )
    )
    yield running
    await running.stop(grace=1)


def md(token: str, user: str = "") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), *([("x-user-id", user)] if user else [])]


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def every_rpc(api: Api, ws: str, user: str) -> dict[str, Any]:
    m, e = md(SCOPED), md(SCOPED, user)
    blocks = [common.BlockInputs(block_id="b", inputs=struct({"v": "{{K}}"}))]
    return {
        "ListSecrets": lambda: api.store.ListSecrets(spb.ListSecretsRequest(workspace_id=ws), metadata=e),
        "SaveSecrets": lambda: api.store.SaveSecrets(
            spb.SaveSecretsRequest(workspace_id=ws, scope=W, expected_revision=1, changes=[set_("X", "v")]), metadata=e
        ),
        "ImportDotenv": lambda: api.store.ImportDotenv(
            spb.ImportDotenvRequest(workspace_id=ws, scope=W, content="X=1", dry_run=True), metadata=e
        ),
        "GetSecret": lambda: api.store.GetSecret(spb.GetSecretRequest(workspace_id=ws, scope=W, key="K"), metadata=e),
        "UpdateSecretDetails": lambda: api.store.UpdateSecretDetails(
            spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="K", description="d"), metadata=e
        ),
        "SetSecretMember": lambda: api.store.SetSecretMember(
            spb.SetSecretMemberRequest(workspace_id=ws, key="K", email=f"{user}@example.com", role=1), metadata=e
        ),
        "RemoveSecretMember": lambda: api.store.RemoveSecretMember(
            spb.RemoveSecretMemberRequest(workspace_id=ws, key="K", email=f"{user}@example.com"), metadata=e
        ),
        "RestoreSecretVersion": lambda: api.store.RestoreSecretVersion(
            spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="K", version=1), metadata=e
        ),
        "ListReferenceable": lambda: api.store.ListReferenceable(
            spb.ListReferenceableRequest(workspace_id=ws), metadata=e
        ),
        "ExplainReferences": lambda: api.store.ExplainReferences(
            spb.ExplainReferencesRequest(workspace_id=ws, trigger=common.TRIGGER_MANUAL, blocks=blocks), metadata=e
        ),
        "ResolveInputs": lambda: api.resolver.ResolveInputs(
            rpb.ResolveInputsRequest(
                workspace_id=ws, trigger=common.TRIGGER_MANUAL, triggering_user_id=user, blocks=blocks
            ),
            metadata=m,
        ),
        "PutWorkspaceMember": lambda: api.directory.PutWorkspaceMember(
            dpb.PutWorkspaceMemberRequest(
                workspace_id=ws, user_id=uid("u"), email=f"{uid('e')}@example.com", permission=ADMIN
            ),
            metadata=m,
        ),
        "RemoveWorkspaceMember": lambda: api.directory.RemoveWorkspaceMember(
            dpb.RemoveWorkspaceMemberRequest(workspace_id=ws, user_id=uid("nobody")), metadata=m
        ),
        "ListWorkspaceMembers": lambda: api.directory.ListWorkspaceMembers(
            dpb.ListWorkspaceMembersRequest(workspace_id=ws), metadata=m
        ),
        "ListAuditEvents": lambda: api.ops.ListAuditEvents(opb.ListAuditEventsRequest(workspace_id=ws), metadata=m),
    }


async def test_a_scoped_principal_is_refused_outside_its_workspaces_on_every_rpc(scoped_server: Running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scoped_server.port}") as channel:
        api = Api(channel)
        user = uid("user")
        outside, inside = uid("other"), "team-" + uid("ws")
        for ws in (outside, inside):
            await api.directory.PutWorkspaceMember(
                dpb.PutWorkspaceMemberRequest(
                    workspace_id=ws, user_id=user, email=f"{user}@example.com", permission=ADMIN
                ),
                metadata=md("setup-token"),
            )
            await api.store.SaveSecrets(
                spb.SaveSecretsRequest(workspace_id=ws, scope=W, expected_revision=0, changes=[set_("K", "value")]),
                metadata=md("setup-token", user),
            )
        refused = {name: await _code(call()) for name, call in every_rpc(api, outside, user).items()}
        assert refused == dict.fromkeys(refused, grpc.StatusCode.PERMISSION_DENIED)
        assert len(refused) == 15
        allowed = {name: await _code(call()) for name, call in every_rpc(api, inside, user).items()}
        assert grpc.StatusCode.PERMISSION_DENIED not in allowed.values(), allowed
        reply = await api.resolver.ResolveInputs(
            rpb.ResolveInputsRequest(
                workspace_id=inside,
                trigger=common.TRIGGER_MANUAL,
                triggering_user_id=user,
                blocks=[common.BlockInputs(block_id="b", inputs=struct({"v": "{{K}}"}))],
            ),
            metadata=md(SCOPED),
        )
        assert to_dict(reply.blocks[0].inputs) == {"v": "value"}
        # Calls that name no workspace are for unscoped principals.
        for call in (
            api.ops.GetKeyStatus(opb.GetKeyStatusRequest(), metadata=md(SCOPED)),
            api.ops.RotateKeys(opb.RotateKeysRequest(), metadata=md(SCOPED)),
            api.ops.ListAuditEvents(opb.ListAuditEventsRequest(), metadata=md(SCOPED)),
        ):
            assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED
        assert await _code(api.ops.GetKeyStatus(opb.GetKeyStatusRequest(), metadata=md("setup-token"))) == (
            grpc.StatusCode.OK
        )

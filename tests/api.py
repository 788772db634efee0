"""Test helpers that call the real server through the generated stubs."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import directory_pb2 as dpb
from service.gen.secrets.v1 import directory_pb2_grpc as dgrpc
from service.gen.secrets.v1 import operations_pb2_grpc as ogrpc
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.gen.secrets.v1 import resolver_pb2_grpc as rgrpc
from service.gen.secrets.v1 import secret_store_pb2 as spb
from service.gen.secrets.v1 import secret_store_pb2_grpc as sgrpc
from tests.conftest import metadata

W = common.SCOPE_WORKSPACE
P = common.SCOPE_PERSONAL
READ = common.WORKSPACE_PERMISSION_READ
WRITE = common.WORKSPACE_PERMISSION_WRITE
ADMIN = common.WORKSPACE_PERMISSION_ADMIN


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    return dict(json_format.MessageToDict(s))


def set_(key: str, value: str) -> spb.SecretChange:
    return spb.SecretChange(key=key, value=value)


def delete(key: str) -> spb.SecretChange:
    return spb.SecretChange(key=key, delete=True)


def rename(key: str, to: str) -> spb.SecretChange:
    return spb.SecretChange(key=key, rename_to=to)


class Api:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.store = sgrpc.SecretStoreStub(channel)
        self.resolver = rgrpc.ResolverStub(channel)
        self.directory = dgrpc.DirectoryStub(channel)
        self.ops = ogrpc.OperationsStub(channel)

    async def member(
        self, ws: str, user: str, permission: int = ADMIN, email: str | None = None, external: bool = False
    ) -> dpb.PutWorkspaceMemberResponse:
        return await self.directory.PutWorkspaceMember(
            dpb.PutWorkspaceMemberRequest(
                workspace_id=ws,
                user_id=user,
                email=email or f"{user}@example.com",
                permission=permission,
                external=external,
            ),
            metadata=metadata("directory"),
        )

    async def list(self, ws: str, user: str) -> spb.ListSecretsResponse:
        return await self.store.ListSecrets(spb.ListSecretsRequest(workspace_id=ws), metadata=metadata("editor", user))

    async def revision(self, ws: str, user: str, scope: int) -> int:
        listing = await self.list(ws, user)
        return listing.workspace_revision if scope == W else listing.personal_revision

    async def save(
        self,
        ws: str,
        user: str,
        scope: int,
        *changes: spb.SecretChange,
        expected: int | None = None,
        acknowledge_in_use: bool = False,
    ) -> spb.SaveSecretsResponse:
        """`acknowledge_in_use`: delete or rename secrets that workflows used (the in-use guard)."""
        if expected is None:
            expected = await self.revision(ws, user, scope)
        return await self.store.SaveSecrets(
            spb.SaveSecretsRequest(
                workspace_id=ws,
                scope=scope,
                expected_revision=expected,
                changes=list(changes),
                acknowledge_in_use=acknowledge_in_use,
            ),
            metadata=metadata("editor", user),
        )

    async def resolve(
        self,
        ws: str,
        blocks: dict[str, dict[str, Any]],
        *,
        trigger: int = common.TRIGGER_MANUAL,
        user: str = "",
        owner: str = "",
        execution_id: str = "",
    ) -> rpb.ResolveInputsResponse:
        return await self.resolver.ResolveInputs(
            rpb.ResolveInputsRequest(
                workspace_id=ws,
                workflow_id="wf",
                execution_id=execution_id or uid("exec"),
                trigger=trigger,
                triggering_user_id=user,
                workflow_owner_id=owner,
                blocks=[common.BlockInputs(block_id=b, inputs=struct(i)) for b, i in blocks.items()],
            ),
            metadata=metadata("executor"),
        )


async def status_of(awaitable: Any) -> grpc.aio.AioRpcError:
    try:
        await awaitable
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError("the call succeeded, but an error was expected")

"""secrets.v1.SecretStore: the editor API. No response carries a value."""

from __future__ import annotations

from typing import Any

import grpc

from service.api import convert
from service.api.common import caller, unimplemented
from service.app.editor import EditorService
from service.domain.batch import Change, OpKind
from service.domain.values import SecretValue
from service.errors import rpc
from service.gen.secrets.v1 import secret_store_pb2 as pb
from service.gen.secrets.v1 import secret_store_pb2_grpc as pb_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]

_SAVE_ACTIONS = {
    OpKind.CREATE: pb.SAVE_ACTION_CREATED,
    OpKind.UPDATE: pb.SAVE_ACTION_UPDATED,
    OpKind.RENAME: pb.SAVE_ACTION_RENAMED,
    OpKind.DELETE: pb.SAVE_ACTION_DELETED,
}


def change_from_proto(change: pb.SecretChange) -> Change:
    which = change.WhichOneof("change")
    if which == "value":
        return Change(change.key, value=SecretValue(change.value))
    if which == "delete":
        return Change(change.key, delete=change.delete)
    if which == "rename_to":
        return Change(change.key, rename_to=change.rename_to)
    return Change(change.key)


class SecretStoreServicer(pb_grpc.SecretStoreServicer):
    def __init__(self, editor: EditorService) -> None:
        self._editor = editor

    @rpc
    async def ListSecrets(self, request: pb.ListSecretsRequest, context: Ctx) -> pb.ListSecretsResponse:
        listing = await self._editor.list_secrets(caller(), request.workspace_id)
        return pb.ListSecretsResponse(
            workspace_secrets=[convert.summary(s) for s in listing.workspace],
            personal_secrets=[convert.summary(s, s.key in listing.shadowed) for s in listing.personal],
            workspace_revision=listing.workspace_revision,
            personal_revision=listing.personal_revision,
        )

    @rpc
    async def SaveSecrets(self, request: pb.SaveSecretsRequest, context: Ctx) -> pb.SaveSecretsResponse:
        result = await self._editor.save_secrets(
            caller(),
            request.workspace_id,
            convert.scope(request.scope),
            request.expected_revision,
            [change_from_proto(c) for c in request.changes],
        )
        return pb.SaveSecretsResponse(
            revision=result.revision,
            saved=[
                pb.SavedChange(
                    key=op.new_key or op.key,
                    action=_SAVE_ACTIONS[op.kind],
                    version=op.version,
                    previous_key=op.key if op.new_key else "",
                )
                for op in result.ops
            ],
        )

    async def ImportDotenv(self, request: pb.ImportDotenvRequest, context: Ctx) -> pb.ImportDotenvResponse:
        return await unimplemented(context, "ImportDotenv")  # type: ignore[no-any-return]

    async def GetSecret(self, request: pb.GetSecretRequest, context: Ctx) -> pb.GetSecretResponse:
        return await unimplemented(context, "GetSecret")  # type: ignore[no-any-return]

    async def UpdateSecretDetails(
        self, request: pb.UpdateSecretDetailsRequest, context: Ctx
    ) -> pb.UpdateSecretDetailsResponse:
        return await unimplemented(context, "UpdateSecretDetails")  # type: ignore[no-any-return]

    async def SetSecretMember(self, request: pb.SetSecretMemberRequest, context: Ctx) -> pb.SetSecretMemberResponse:
        return await unimplemented(context, "SetSecretMember")  # type: ignore[no-any-return]

    async def RemoveSecretMember(
        self, request: pb.RemoveSecretMemberRequest, context: Ctx
    ) -> pb.RemoveSecretMemberResponse:
        return await unimplemented(context, "RemoveSecretMember")  # type: ignore[no-any-return]

    async def RestoreSecretVersion(
        self, request: pb.RestoreSecretVersionRequest, context: Ctx
    ) -> pb.RestoreSecretVersionResponse:
        return await unimplemented(context, "RestoreSecretVersion")  # type: ignore[no-any-return]

    async def ListReferenceable(
        self, request: pb.ListReferenceableRequest, context: Ctx
    ) -> pb.ListReferenceableResponse:
        return await unimplemented(context, "ListReferenceable")  # type: ignore[no-any-return]

    async def ExplainReferences(
        self, request: pb.ExplainReferencesRequest, context: Ctx
    ) -> pb.ExplainReferencesResponse:
        return await unimplemented(context, "ExplainReferences")  # type: ignore[no-any-return]

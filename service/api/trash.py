"""secrets.v1.SecretStore's trash RPCs (issue 13): ListDeletedSecrets, RestoreDeletedSecret and
PurgeDeletedSecret, mixed into SecretStoreServicer. Metadata only: no response carries a value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from service.api import convert
from service.api.common import caller
from service.app.results import SecretSummary
from service.app.trash import DeletedSecret, TrashService
from service.gen.secrets.v1 import secret_store_pb2 as pb

if TYPE_CHECKING:
    from service.app.editor import EditorService

Ctx = grpc.aio.ServicerContext[Any, Any]


def deleted_to_proto(d: DeletedSecret) -> pb.DeletedSecret:
    summary = SecretSummary(
        d.key,
        d.scope,
        d.display_name,
        d.description,
        d.version,
        d.restricted,
        d.created_at,
        d.created_by,
        d.updated_at,
        d.updated_by,
        d.expires_at,
    )
    return pb.DeletedSecret(
        deleted_id=d.deleted_id,
        summary=convert.summary(summary),
        deleted_at=convert.timestamp(d.deleted_at),
        deleted_by=d.deleted_by,
        purge_at=convert.timestamp(d.purge_at),
        kept_versions=d.versions,
    )


class TrashRpcs:
    """The trash's RPCs; the servicer provides the two use cases."""

    _editor: EditorService
    _trash: TrashService

    async def ListDeletedSecrets(
        self, request: pb.ListDeletedSecretsRequest, context: Ctx
    ) -> pb.ListDeletedSecretsResponse:
        listing = await self._trash.list_deleted(caller(), request.workspace_id)
        return pb.ListDeletedSecretsResponse(
            workspace_secrets=[deleted_to_proto(d) for d in listing.workspace],
            personal_secrets=[deleted_to_proto(d) for d in listing.personal],
        )

    async def RestoreDeletedSecret(
        self, request: pb.RestoreDeletedSecretRequest, context: Ctx
    ) -> pb.RestoreDeletedSecretResponse:
        # Imported here: secret_store imports this module for the mixin.
        from service.api.secret_store import details_to_proto

        who = caller()
        restored = await self._trash.restore(
            who, request.workspace_id, convert.scope(request.scope), request.deleted_id
        )
        details = await self._editor.get_secret(who, request.workspace_id, restored.scope, restored.key)
        return pb.RestoreDeletedSecretResponse(secret=details_to_proto(details), revision=restored.revision)

    async def PurgeDeletedSecret(
        self, request: pb.PurgeDeletedSecretRequest, context: Ctx
    ) -> pb.PurgeDeletedSecretResponse:
        await self._trash.purge(caller(), request.workspace_id, convert.scope(request.scope), request.deleted_id)
        return pb.PurgeDeletedSecretResponse()

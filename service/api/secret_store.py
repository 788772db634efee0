"""secrets.v1.SecretStore: the editor API. No response carries a value."""

from __future__ import annotations

from typing import Any

import grpc

from service.api import convert
from service.api.common import caller
from service.api.inputs import PathSizes, Site, sites_in_blocks
from service.api.trash import TrashRpcs
from service.app.editor import Details, EditorService
from service.app.results import SecretSummary
from service.app.trash import TrashService
from service.domain.batch import Change, OpKind
from service.domain.errors import ResourceExhausted
from service.domain.limits import MAX_MESSAGE_BYTES
from service.domain.values import SecretValue
from service.gen.secrets.v1 import secret_store_pb2 as pb
from service.gen.secrets.v1 import secret_store_pb2_grpc as pb_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]

_SAVE_ACTIONS = {
    OpKind.CREATE: pb.SAVE_ACTION_CREATED,
    OpKind.UPDATE: pb.SAVE_ACTION_UPDATED,
    OpKind.RENAME: pb.SAVE_ACTION_RENAMED,
    OpKind.DELETE: pb.SAVE_ACTION_DELETED,
}
_IMPORT_ACTIONS = {
    "created": pb.IMPORT_ACTION_CREATED,
    "updated": pb.IMPORT_ACTION_UPDATED,
    "unchanged": pb.IMPORT_ACTION_UNCHANGED,
    "skipped": pb.IMPORT_ACTION_SKIPPED,
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


def details_to_proto(details: Details) -> pb.SecretDetails:
    return pb.SecretDetails(
        summary=convert.summary(details.secret),
        members=[
            pb.SecretMember(user_id=m.user_id, email=m.email, role=int(m.role), implicit=m.implicit)  # type: ignore[arg-type]
            for m in details.members
        ],
        versions=[
            pb.SecretVersion(
                version=v.version,
                created_at=convert.timestamp(v.created_at),
                created_by=v.created_by,
                current=v.version == details.secret.version,
            )
            for v in details.versions
        ],
        usage=[
            pb.SecretUsage(
                workflow_id=u.workflow_id,
                last_used_at=convert.timestamp(u.last_used_at),
                uses_last_30_days=u.uses,
                last_execution_id=u.last_execution_id,
            )
            for u in details.usage
        ],
    )


def referenceable(row: SecretSummary, shadowed: bool) -> pb.ReferenceableKey:
    return pb.ReferenceableKey(
        key=row.key,
        scope=int(row.scope),  # type: ignore[arg-type]
        display_name=row.display_name,
        description=row.description,
        shadowed=shadowed,
        restricted=row.restricted,
        expires_at=convert.optional_timestamp(row.expires_at),
        expired=convert.expired(row.expires_at),
    )


# What one explained reference costs in the response besides its path, key and block id: the
# message (at most about 120 characters), scope, version, problem and field tags.
_EXPLAINED_REFERENCE_OVERHEAD = 160


def _walk_for_explain(request: pb.ExplainReferencesRequest) -> tuple[list[list[Site]], list[str]]:
    """The walk, and a bound on the response it leads to, checked before any path is built: a
    path repeats the names above it, so a few MiB of deeply nested inputs could otherwise make
    the server build gigabytes of field paths for a response it cannot send."""
    sites_per_block, keys = sites_in_blocks([(b.block_id, b.inputs) for b in request.blocks])
    path_size = PathSizes()
    total = 0
    for block, sites in zip(request.blocks, sites_per_block, strict=True):
        for site in sites:
            refs = site.template.references
            if refs:
                each = path_size(site.step) + len(block.block_id) + _EXPLAINED_REFERENCE_OVERHEAD
                total += len(refs) * each + sum(len(r.key) for r in refs)
        if total > MAX_MESSAGE_BYTES:
            raise ResourceExhausted(
                f"the explanation would be larger than {MAX_MESSAGE_BYTES} bytes; explain fewer or shallower references"
            )
    return sites_per_block, keys


class SecretStoreServicer(TrashRpcs, pb_grpc.SecretStoreServicer):
    def __init__(self, editor: EditorService, trash: TrashService) -> None:
        self._editor = editor
        self._trash = trash

    async def ListSecrets(self, request: pb.ListSecretsRequest, context: Ctx) -> pb.ListSecretsResponse:
        listing = await self._editor.list_secrets(
            caller(),
            request.workspace_id,
            request.page_size,
            request.page_token,
            convert.duration_from(request.expiring_within, "expiring_within"),
        )
        return pb.ListSecretsResponse(
            workspace_secrets=[convert.summary(s) for s in listing.workspace],
            personal_secrets=[convert.summary(s, s.key in listing.shadowed) for s in listing.personal],
            workspace_revision=listing.workspace_revision,
            personal_revision=listing.personal_revision,
            next_page_token=listing.next_page_token,
        )

    async def SaveSecrets(self, request: pb.SaveSecretsRequest, context: Ctx) -> pb.SaveSecretsResponse:
        result = await self._editor.save_secrets(
            caller(),
            request.workspace_id,
            convert.scope(request.scope),
            request.expected_revision,
            [change_from_proto(c) for c in request.changes],
            request.acknowledge_in_use,
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
        result = await self._editor.import_dotenv(
            caller(),
            request.workspace_id,
            convert.scope(request.scope),
            request.content,
            request.dry_run,
            request.overwrite_existing,
            request.expected_revision,
        )
        return pb.ImportDotenvResponse(
            entries=[
                pb.ImportEntry(key=e.key, line=e.line, action=_IMPORT_ACTIONS[e.action], note=e.note)
                for e in result.entries
            ],
            problems=[pb.ImportProblem(line=line, message=message) for line, message in result.problems],
            revision=result.revision,
            dry_run=result.dry_run,
        )

    async def GetSecret(self, request: pb.GetSecretRequest, context: Ctx) -> pb.GetSecretResponse:
        details = await self._editor.get_secret(
            caller(), request.workspace_id, convert.scope(request.scope), request.key
        )
        return pb.GetSecretResponse(secret=details_to_proto(details))

    async def UpdateSecretDetails(
        self, request: pb.UpdateSecretDetailsRequest, context: Ctx
    ) -> pb.UpdateSecretDetailsResponse:
        details = await self._editor.update_details(
            caller(),
            request.workspace_id,
            convert.scope(request.scope),
            request.key,
            request.display_name if request.HasField("display_name") else None,
            request.description if request.HasField("description") else None,
            request.restricted if request.HasField("restricted") else None,
            convert.time_from(request.expires_at, "expires_at") if request.HasField("expires_at") else None,
            request.clear_expires_at,
        )
        return pb.UpdateSecretDetailsResponse(secret=details_to_proto(details))

    async def SetSecretMember(self, request: pb.SetSecretMemberRequest, context: Ctx) -> pb.SetSecretMemberResponse:
        details = await self._editor.set_member(
            caller(), request.workspace_id, request.key, request.email, convert.secret_role(request.role)
        )
        return pb.SetSecretMemberResponse(secret=details_to_proto(details))

    async def RemoveSecretMember(
        self, request: pb.RemoveSecretMemberRequest, context: Ctx
    ) -> pb.RemoveSecretMemberResponse:
        details = await self._editor.remove_member(caller(), request.workspace_id, request.key, request.email)
        return pb.RemoveSecretMemberResponse(secret=details_to_proto(details))

    async def RestoreSecretVersion(
        self, request: pb.RestoreSecretVersionRequest, context: Ctx
    ) -> pb.RestoreSecretVersionResponse:
        details = await self._editor.restore_version(
            caller(), request.workspace_id, convert.scope(request.scope), request.key, request.version
        )
        return pb.RestoreSecretVersionResponse(secret=details_to_proto(details))

    async def ListReferenceable(
        self, request: pb.ListReferenceableRequest, context: Ctx
    ) -> pb.ListReferenceableResponse:
        found = await self._editor.list_referenceable(
            caller(), request.workspace_id, request.prefix, request.page_size, request.page_token
        )
        return pb.ListReferenceableResponse(
            workspace=[referenceable(s, False) for s in found.workspace],
            personal=[referenceable(s, s.key in found.shadowed) for s in found.personal],
            next_page_token=found.next_page_token,
        )

    async def ExplainReferences(
        self, request: pb.ExplainReferencesRequest, context: Ctx
    ) -> pb.ExplainReferencesResponse:
        run_user, sites_per_block, explained = await self._editor.explain(
            caller(),
            request.workspace_id,
            convert.trigger(request.trigger),
            request.triggering_user_id,
            request.workflow_owner_id,
            lambda: _walk_for_explain(request),
        )
        response = pb.ExplainReferencesResponse(run_user_id=run_user)
        for block, sites in zip(request.blocks, sites_per_block, strict=True):
            for site in sites:
                for ref in site.template.references:
                    what = explained[ref.key]
                    item = response.references.add(
                        block_id=block.block_id, field_path=site.path, key=ref.key, message=what.message
                    )
                    if what.scope is not None:
                        item.scope = int(what.scope)  # type: ignore[assignment]
                        item.version = what.version
                    if what.problem is not None:
                        item.problem = int(what.problem)  # type: ignore[assignment]
        return response

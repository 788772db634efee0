"""Async clients for the three kinds of caller: executors, editors and operators.

Each hides the metadata (bearer token, x-user-id), applies a default deadline, and raises the
typed exceptions of `secrets_client.errors` instead of grpc errors.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2

from secrets_client.errors import SecretsError, from_rpc_error
from secrets_client.gen.secrets.v1 import common_pb2 as common
from secrets_client.gen.secrets.v1 import directory_pb2 as directory
from secrets_client.gen.secrets.v1 import directory_pb2_grpc as directory_grpc
from secrets_client.gen.secrets.v1 import operations_pb2 as operations
from secrets_client.gen.secrets.v1 import operations_pb2_grpc as operations_grpc
from secrets_client.gen.secrets.v1 import resolver_pb2 as resolver
from secrets_client.gen.secrets.v1 import resolver_pb2_grpc as resolver_grpc
from secrets_client.gen.secrets.v1 import secret_store_pb2 as store
from secrets_client.gen.secrets.v1 import secret_store_pb2_grpc as store_grpc
from secrets_client.redact import Redactor

if TYPE_CHECKING:  # the async stub types exist for type checking only
    from secrets_client.gen.secrets.v1.operations_pb2_grpc import OperationsAsyncStub
    from secrets_client.gen.secrets.v1.secret_store_pb2_grpc import SecretStoreAsyncStub

R = TypeVar("R")

TRIGGERS = {
    "manual": common.TRIGGER_MANUAL,
    "api": common.TRIGGER_API,
    "webhook": common.TRIGGER_WEBHOOK,
    "schedule": common.TRIGGER_SCHEDULE,
}
SCOPES = {"workspace": common.SCOPE_WORKSPACE, "personal": common.SCOPE_PERSONAL}


class _Client:
    def __init__(
        self,
        target: str,
        token: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._own_channel = channel is None
        if channel is None:
            channel = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
        self.channel = channel
        self._token = token
        self.timeout = timeout

    def _metadata(self, user_id: str | None = None) -> list[tuple[str, str]]:
        md = [("authorization", f"Bearer {self._token}")]
        if user_id is not None:
            md.append(("x-user-id", user_id))
        return md

    async def _call(
        self,
        method: Callable[..., Awaitable[R]],
        request: Any,
        user_id: str | None = None,
        timeout: float | None = None,
    ) -> R:
        try:
            return await method(request, metadata=self._metadata(user_id), timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None

    async def close(self) -> None:
        if self._own_channel:
            await self.channel.close(None)

    async def __aenter__(self: Any) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<token hidden>)"


@dataclass(frozen=True)
class Reference:
    field_path: str
    key: str
    scope: str  # "workspace" or "personal"
    version: int
    # Where the value is in the resolved string at field_path, in code points (Python string
    # indexes): `block.inputs[...][start:end]`. Never empty: end > start.
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class BlockError:
    code: str  # "SECRET_NOT_FOUND", "SECRET_NOT_PERMITTED" or "SECRET_EXPIRED"
    key: str
    field_path: str
    message: str


@dataclass
class ResolvedBlock:
    block_id: str
    inputs: dict[str, Any] | None
    references: list[Reference] = field(default_factory=list)
    error: BlockError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Resolution:
    run_user_id: str
    blocks: dict[str, ResolvedBlock]
    # Every value the resolution substituted, for masking in logs (see redactor()).
    _values: list[str] = field(default_factory=list, repr=False)

    def redactor(self) -> Redactor:
        """A Redactor for the values this resolution put into the inputs."""
        return Redactor(self._values)

    def __repr__(self) -> str:
        return f"Resolution(run_user_id={self.run_user_id!r}, blocks={list(self.blocks)!r})"


def _struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


# The service's field path syntax (service/api/inputs.py): `headers.Authorization`,
# `messages[2].content`, `headers["X-Api.Key"]`.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def _segment(name: str, first: bool) -> str:
    if _PLAIN_NAME.fullmatch(name):
        return name if first else f".{name}"
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'["{escaped}"]'


def _strings_by_path(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in resolved inputs (a JSON-like dict) with its field path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from _strings_by_path(item, path + _segment(name, not path))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings_by_path(item, f"{path}[{i}]")


def _values_used(inputs: Mapping[str, Any], references: list[Reference]) -> Iterator[str]:
    """The values the service put into `inputs`, cut where it says each one is."""
    wanted = {r.field_path for r in references}
    strings = {path: text for path, text in _strings_by_path(inputs) if path in wanted}
    for r in references:
        text = strings.get(r.field_path)
        if text is None or not 0 <= r.start < r.end <= len(text):
            # A server that predates the offsets (or a broken response): a redactor built from
            # guesses would miss values silently, so none is built at all.
            raise SecretsError(
                f"the service did not say where the value of {r.key!r} is in {r.field_path!r} "
                f"(start {r.start}, end {r.end}); this client needs a service that reports it",
                grpc.StatusCode.UNIMPLEMENTED,
            )
        yield text[r.start : r.end]


def resolution_from_response(reply: resolver.ResolveInputsResponse) -> Resolution:
    """A Resolution from the service's ResolveInputsResponse: each block's inputs and references,
    and the values for the redactor, each cut from its string where the response says it is."""
    result: dict[str, ResolvedBlock] = {}
    values: dict[str, None] = {}
    for b in reply.blocks:
        if b.HasField("error"):
            code = common.BlockErrorCode.Name(b.error.code).removeprefix("BLOCK_ERROR_CODE_")
            err = BlockError(code, b.error.key, b.error.field_path, b.error.message)
            result[b.block_id] = ResolvedBlock(b.block_id, None, error=err)
            continue
        refs = [
            Reference(
                r.field_path,
                r.key,
                common.Scope.Name(r.scope).removeprefix("SCOPE_").lower(),
                r.version,
                r.start,
                r.end,
            )
            for r in b.references
        ]
        inputs = json_format.MessageToDict(b.inputs)
        values.update(dict.fromkeys(_values_used(inputs, refs)))
        result[b.block_id] = ResolvedBlock(b.block_id, inputs, refs)
    return Resolution(reply.run_user_id, result, list(values))


class ExecutorClient(_Client):
    """For workflow executors (role "executor")."""

    async def resolve(
        self,
        workspace_id: str,
        blocks: Mapping[str, Mapping[str, Any]],
        *,
        trigger: str = "manual",
        triggering_user_id: str = "",
        workflow_owner_id: str = "",
        workflow_id: str = "",
        execution_id: str = "",
        timeout: float | None = None,
        grant: str = "",
    ) -> Resolution:
        """Resolves `{{KEY}}` references in each block's inputs (block id -> JSON-like dict).

        With a run `grant` (the token OrchestratorClient.issue_grant returned, required for an
        executor marked requires_grant), the run comes from the grant: leave workspace_id ("")
        and the run fields empty, or pass the grant's own values."""
        if grant:
            request = resolver.ResolveInputsRequest(
                workspace_id=workspace_id,
                workflow_id=workflow_id,
                execution_id=execution_id,
                trigger=TRIGGERS[trigger] if triggering_user_id or workflow_owner_id else common.TRIGGER_UNSPECIFIED,
                triggering_user_id=triggering_user_id,
                workflow_owner_id=workflow_owner_id,
                grant=grant,
            )
        else:
            request = resolver.ResolveInputsRequest(
                workspace_id=workspace_id,
                workflow_id=workflow_id,
                execution_id=execution_id or uuid.uuid4().hex,
                trigger=TRIGGERS[trigger],
                triggering_user_id=triggering_user_id,
                workflow_owner_id=workflow_owner_id,
            )
        request.blocks.extend(common.BlockInputs(block_id=b, inputs=_struct(i)) for b, i in blocks.items())
        stub = resolver_grpc.ResolverStub(self.channel)
        reply = await self._call(stub.ResolveInputs, request, timeout=timeout)
        return resolution_from_response(reply)


class EditorClient(_Client):
    """For the platform's editor backend (role "editor"); every call acts for `user_id`."""

    def _stub(self) -> SecretStoreAsyncStub:
        return store_grpc.SecretStoreStub(self.channel)

    async def list_secrets(
        self, user_id: str, workspace_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> store.ListSecretsResponse:
        """One page (100 secrets by default, 1,000 at most): the workspace's secrets by key, then the
        user's personal ones; `next_page_token` continues it. `iter_secrets` reads every page."""
        request = store.ListSecretsRequest(workspace_id=workspace_id, page_size=page_size, page_token=page_token)
        return await self._call(self._stub().ListSecrets, request, user_id)

    async def iter_secrets(
        self, user_id: str, workspace_id: str, *, page_size: int = 1000
    ) -> AsyncIterator[common.SecretSummary]:
        """Every secret of the listing, workspace secrets first, fetching page by page. Saves made
        meanwhile never make a key appear twice or be skipped (keyset paging). To save after it,
        use the revisions of a `list_secrets` call made before it."""
        token = ""
        while True:
            page = await self.list_secrets(user_id, workspace_id, page_size=page_size, page_token=token)
            for summary in (*page.workspace_secrets, *page.personal_secrets):
                yield summary
            token = page.next_page_token
            if not token:
                return

    async def save(
        self,
        user_id: str,
        workspace_id: str,
        *,
        scope: str = "workspace",
        expected_revision: int,
        set: Mapping[str, str] | None = None,
        delete: Iterable[str] = (),
        rename: Mapping[str, str] | None = None,
        acknowledge_in_use: bool = False,
    ) -> store.SaveSecretsResponse:
        """Deleting or renaming a secret that workflows used lately raises FailedPrecondition
        (its `violations` name the workflows) unless `acknowledge_in_use`."""
        changes = [store.SecretChange(key=k, value=v) for k, v in (set or {}).items()]
        changes += [store.SecretChange(key=k, delete=True) for k in delete]
        changes += [store.SecretChange(key=k, rename_to=v) for k, v in (rename or {}).items()]
        request = store.SaveSecretsRequest(
            workspace_id=workspace_id,
            scope=SCOPES[scope],
            expected_revision=expected_revision,
            changes=changes,
            acknowledge_in_use=acknowledge_in_use,
        )
        return await self._call(self._stub().SaveSecrets, request, user_id)

    async def import_dotenv(
        self,
        user_id: str,
        workspace_id: str,
        content: str,
        *,
        scope: str = "workspace",
        expected_revision: int = 0,
        dry_run: bool = False,
        overwrite_existing: bool = False,
    ) -> store.ImportDotenvResponse:
        request = store.ImportDotenvRequest(
            workspace_id=workspace_id,
            scope=SCOPES[scope],
            content=content,
            dry_run=dry_run,
            overwrite_existing=overwrite_existing,
            expected_revision=expected_revision,
        )
        return await self._call(self._stub().ImportDotenv, request, user_id)

    async def get_secret(
        self, user_id: str, workspace_id: str, key: str, *, scope: str = "workspace"
    ) -> store.SecretDetails:
        reply = await self._call(
            self._stub().GetSecret,
            store.GetSecretRequest(workspace_id=workspace_id, scope=SCOPES[scope], key=key),
            user_id,
        )
        return reply.secret

    async def update_details(
        self,
        user_id: str,
        workspace_id: str,
        key: str,
        *,
        scope: str = "workspace",
        display_name: str | None = None,
        description: str | None = None,
        restricted: bool | None = None,
    ) -> store.SecretDetails:
        request = store.UpdateSecretDetailsRequest(workspace_id=workspace_id, scope=SCOPES[scope], key=key)
        if display_name is not None:
            request.display_name = display_name
        if description is not None:
            request.description = description
        if restricted is not None:
            request.restricted = restricted
        return (await self._call(self._stub().UpdateSecretDetails, request, user_id)).secret

    async def set_member(
        self, user_id: str, workspace_id: str, key: str, email: str, role: str = "member"
    ) -> store.SecretDetails:
        roles = {"admin": common.SECRET_ROLE_ADMIN, "member": common.SECRET_ROLE_MEMBER}
        request = store.SetSecretMemberRequest(workspace_id=workspace_id, key=key, email=email, role=roles[role])
        return (await self._call(self._stub().SetSecretMember, request, user_id)).secret

    async def remove_member(self, user_id: str, workspace_id: str, key: str, email: str) -> store.SecretDetails:
        request = store.RemoveSecretMemberRequest(workspace_id=workspace_id, key=key, email=email)
        return (await self._call(self._stub().RemoveSecretMember, request, user_id)).secret

    async def restore_version(
        self, user_id: str, workspace_id: str, key: str, version: int, *, scope: str = "workspace"
    ) -> store.SecretDetails:
        request = store.RestoreSecretVersionRequest(
            workspace_id=workspace_id, scope=SCOPES[scope], key=key, version=version
        )
        return (await self._call(self._stub().RestoreSecretVersion, request, user_id)).secret

    async def set_expiry(
        self, user_id: str, workspace_id: str, key: str, expires_at: datetime | None, *, scope: str = "workspace"
    ) -> store.SecretDetails:
        """Sets when the secret expires (a run using it then fails SECRET_EXPIRED); None clears it."""
        request = store.UpdateSecretDetailsRequest(workspace_id=workspace_id, scope=SCOPES[scope], key=key)
        if expires_at is None:
            request.clear_expires_at = True
        else:
            request.expires_at.FromDatetime(expires_at)
        return (await self._call(self._stub().UpdateSecretDetails, request, user_id)).secret

    async def list_deleted(self, user_id: str, workspace_id: str) -> store.ListDeletedSecretsResponse:
        """The trash: the workspace's deleted secrets and the user's own deleted personal ones."""
        request = store.ListDeletedSecretsRequest(workspace_id=workspace_id)
        return await self._call(self._stub().ListDeletedSecrets, request, user_id)

    async def restore_deleted(
        self, user_id: str, workspace_id: str, deleted_id: int, *, scope: str = "workspace"
    ) -> store.RestoreDeletedSecretResponse:
        request = store.RestoreDeletedSecretRequest(
            workspace_id=workspace_id, scope=SCOPES[scope], deleted_id=deleted_id
        )
        return await self._call(self._stub().RestoreDeletedSecret, request, user_id)

    async def purge_deleted(
        self, user_id: str, workspace_id: str, deleted_id: int, *, scope: str = "workspace"
    ) -> None:
        request = store.PurgeDeletedSecretRequest(workspace_id=workspace_id, scope=SCOPES[scope], deleted_id=deleted_id)
        await self._call(self._stub().PurgeDeletedSecret, request, user_id)

    async def list_referenceable(
        self, user_id: str, workspace_id: str, prefix: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> store.ListReferenceableResponse:
        """One page of the keys the user can reference; `next_page_token` continues it."""
        request = store.ListReferenceableRequest(
            workspace_id=workspace_id, prefix=prefix, page_size=page_size, page_token=page_token
        )
        return await self._call(self._stub().ListReferenceable, request, user_id)

    async def explain(
        self,
        user_id: str,
        workspace_id: str,
        blocks: Mapping[str, Mapping[str, Any]],
        *,
        trigger: str = "manual",
        triggering_user_id: str = "",
        workflow_owner_id: str = "",
    ) -> store.ExplainReferencesResponse:
        request = store.ExplainReferencesRequest(
            workspace_id=workspace_id,
            trigger=TRIGGERS[trigger],
            triggering_user_id=triggering_user_id,
            workflow_owner_id=workflow_owner_id,
            blocks=[common.BlockInputs(block_id=b, inputs=_struct(i)) for b, i in blocks.items()],
        )
        return await self._call(self._stub().ExplainReferences, request, user_id)


class DirectoryClient(_Client):
    """For the platform's membership sync (role "directory")."""

    async def put_member(
        self, workspace_id: str, user_id: str, email: str, permission: str = "read", *, external: bool = False
    ) -> directory.PutWorkspaceMemberResponse:
        permissions = {
            "read": common.WORKSPACE_PERMISSION_READ,
            "write": common.WORKSPACE_PERMISSION_WRITE,
            "admin": common.WORKSPACE_PERMISSION_ADMIN,
        }
        request = directory.PutWorkspaceMemberRequest(
            workspace_id=workspace_id,
            user_id=user_id,
            email=email,
            permission=permissions[permission],
            external=external,
        )
        return await self._call(directory_grpc.DirectoryStub(self.channel).PutWorkspaceMember, request)

    async def remove_member(self, workspace_id: str, user_id: str) -> directory.RemoveWorkspaceMemberResponse:
        request = directory.RemoveWorkspaceMemberRequest(workspace_id=workspace_id, user_id=user_id)
        return await self._call(directory_grpc.DirectoryStub(self.channel).RemoveWorkspaceMember, request)

    async def list_members(self, workspace_id: str, *, page_size: int = 1000) -> list[directory.WorkspaceMember]:
        """Every member of the workspace, by user id, fetched page by page."""
        members: list[directory.WorkspaceMember] = []
        token = ""
        while True:
            request = directory.ListWorkspaceMembersRequest(
                workspace_id=workspace_id, page_size=page_size, page_token=token
            )
            page = await self._call(directory_grpc.DirectoryStub(self.channel).ListWorkspaceMembers, request)
            members.extend(page.members)
            token = page.next_page_token
            if not token:
                return members


class OpsClient(_Client):
    """For operators (role "ops")."""

    def _stub(self) -> OperationsAsyncStub:
        return operations_grpc.OperationsStub(self.channel)

    async def key_status(self) -> operations.GetKeyStatusResponse:
        return await self._call(self._stub().GetKeyStatus, operations.GetKeyStatusRequest())

    async def rotate_keys(self, timeout: float = 300.0) -> operations.RotateKeysResponse:
        return await self._call(self._stub().RotateKeys, operations.RotateKeysRequest(), timeout=timeout)

    async def rotate_data_keys(
        self, *, workspace_id: str = "", user_id: str = "", timeout: float = 300.0
    ) -> operations.RotateDataKeysResponse:
        """Gives one tenant a new data key and destroys the old one: a workspace (its workspace
        secrets) or a user (their personal secrets); name exactly one."""
        request = operations.RotateDataKeysRequest(workspace_id=workspace_id, user_id=user_id)
        return await self._call(self._stub().RotateDataKeys, request, timeout=timeout)

    async def audit_events(
        self,
        workspace_id: str = "",
        page_size: int = 100,
        *,
        principal: str = "",
        user_id: str = "",
        key: str = "",
        action: str = "",
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> AsyncIterator[operations.AuditEvent]:
        """Every audit event matching the filters (all of them; empty ones match everything),
        newest first, fetching page by page. `start` and `end` (aware datetimes) bound the time:
        at or after `start`, before `end`."""
        token = ""
        while True:
            request = operations.ListAuditEventsRequest(
                workspace_id=workspace_id,
                page_size=page_size,
                page_token=token,
                principal=principal,
                user_id=user_id,
                key=key,
                action=action,
            )
            if start is not None:
                request.start_time.FromDatetime(start)
            if end is not None:
                request.end_time.FromDatetime(end)
            reply = await self._call(self._stub().ListAuditEvents, request)
            for event in reply.events:
                yield event
            token = reply.next_page_token
            if not token:
                return

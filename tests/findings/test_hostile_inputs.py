"""Hostile values in every caller-supplied identifier field of every secrets.v1 RPC (SPEC 2.1, 3.1).

SPEC 2.1: identifiers a caller supplies (workspace, user, workflow and execution ids, emails, page
tokens) are checked at the edge by one rule: at most 256 characters (emails 320), not empty where
required, no NUL or other control characters; anything else is INVALID_ARGUMENT naming the field.
Nothing a caller can send produces INTERNAL.

Every case is tried as a workspace ADMIN (so that permission checks cannot mask validation) and as
a caller who is not a member of the workspace (the check is at the edge: it comes before any
permission check). A non-member may instead be refused with PERMISSION_DENIED for a field of the
body (finding 16 authorises before the inputs are walked), but never for workspace_id, and never
with INTERNAL, UNKNOWN or success. Each test collects every value that got the wrong answer, so one failure lists
all of them, with the server's own log of any INTERNAL (exception type and where it was raised).

Not repeated here: the cases tests/integration/test_bad_input.py already covers (NUL in keys and
values, ListSecrets' workspace_id NUL, invalid UTF-8 in ListSecrets and ResolveInputs, deep inputs).
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import directory_pb2 as dpb
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, Api, W, delete, set_, struct, uid
from tests.conftest import TOKENS, Server, metadata

BAD = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
DENIED = grpc.StatusCode.PERMISSION_DENIED

# --------------------------------------------------------------------------------------------
# The hostile values


def _ids(required: bool) -> dict[str, str]:
    values = {
        "NUL": "\x00",
        "NUL inside": "id\x00x",
        "\\x01": "id\x01x",
        "newline": "id\nx",
        "carriage return": "id\rx",
        "tab": "id\tx",
        "DEL \\x7f": "id\x7fx",
        "C1 control \\x85": "id\x85x",
        "257 characters": "i" * 257,
        "10,000 characters": "i" * 10_000,
    }
    return {"empty": "", **values} if required else values


def _emails(required: bool) -> dict[str, str]:
    values = {
        "NUL": "a\x00b@example.com",
        "\\x01": "a\x01b@example.com",
        "newline": "a\nb@example.com",
        "DEL \\x7f": "a\x7fb@example.com",
        "C1 control \\x85": "a\x85b@example.com",
        "321 characters": "a" * 64 + "@" + "b" * 252 + ".com",
        "10,000 characters": "a" * 64 + "@" + "b" * 9931 + ".com",
    }
    return {"empty": "", **values} if required else values


def _keys() -> dict[str, str]:
    return {
        "empty": "",
        "NUL": "\x00",
        "NUL inside": "K\x00",
        "\\x01": "K\x01",
        "newline": "K\n",
        "DEL \\x7f": "K\x7f",
        "257 characters": "K" * 257,
        "10,000 characters": "K" * 10_000,
    }


def _prefixes() -> dict[str, str]:
    # An empty prefix means "all keys": it is valid.
    return {
        "NUL": "\x00",
        "\\x01": "K\x01",
        "newline": "K\n",
        "DEL \\x7f": "K\x7f",
        "257 characters": "K" * 257,
        "10,000 characters": "K" * 10_000,
    }


def token(text: str) -> str:
    """A page token in the first release's format (urlsafe base64 of v1|<time>|<id>), no longer
    issued; forged cursors in today's format are tested in tests/integration/test_audit_log.py."""
    return base64.urlsafe_b64encode(text.encode()).decode()


NOW = datetime.now(UTC).isoformat()


def _page_tokens() -> dict[str, str]:
    # An empty token means "the first page": it is valid.
    return {
        "NUL": "\x00",
        "\\x01": "\x01",
        "newline": "\n",
        "DEL \\x7f": "\x7f",
        "257 characters": "A" * 257,
        "10,000 characters": "A" * 10_000,
        "id 2**63": token(f"v1|{NOW}|{2**63}"),
        "id 2**64": token(f"v1|{NOW}|{2**64}"),
        "id 10**40": token(f"v1|{NOW}|{10**40}"),
        "id -1": token(f"v1|{NOW}|-1"),
        "id -(2**63)-1": token(f"v1|{NOW}|{-(2**63) - 1}"),
        "time out of range after UTC conversion": token("v1|9999-12-31T23:59:59-14:00|5"),
        "time year 1 east of UTC": token("v1|0001-01-01T00:00:00+14:00|5"),
        "not base64 of v1": token(f"v2|{NOW}|5"),
        "a 5,000-digit id": token(f"v1|{NOW}|{'9' * 5000}"),
    }


# --------------------------------------------------------------------------------------------
# The world the calls are made in


@dataclass
class World:
    ws: str
    admin: str
    outsider: str
    member_email: str
    plain_email: str
    dir_ws: str
    callers: dict[str, str] = field(default_factory=dict)
    deleted_id: int = 0  # GONE, a workspace secret in the trash


@pytest.fixture(scope="module")
async def world(channel: grpc.aio.Channel) -> World:
    api = Api(channel)
    ws, admin, outsider, m2, m3 = uid("ws"), uid("admin"), uid("outsider"), uid("m2"), uid("m3")
    await api.member(ws, admin, ADMIN)
    await api.member(ws, m2, READ)
    await api.member(ws, m3, READ)
    await api.save(ws, admin, W, set_("K", "hostile-first"))
    await api.save(ws, admin, W, set_("K", "hostile-second"))
    await api.save(ws, admin, common.SCOPE_PERSONAL, set_("K", "hostile-personal"))
    await api.save(ws, outsider, common.SCOPE_PERSONAL, set_("K", "hostile-outsider"), expected=0)
    await api.store.SetSecretMember(
        spb.SetSecretMemberRequest(workspace_id=ws, key="K", email=f"{m2}@example.com", role=common.SECRET_ROLE_MEMBER),
        metadata=metadata("editor", admin),
    )
    await api.save(ws, admin, W, set_("GONE", "hostile-deleted"))
    await api.save(ws, admin, W, delete("GONE"))
    trash = await api.store.ListDeletedSecrets(
        spb.ListDeletedSecretsRequest(workspace_id=ws), metadata=metadata("editor", admin)
    )
    w = World(ws, admin, outsider, f"{m2}@example.com", f"{m3}@example.com", uid("dirws"))
    w.callers = {"member": admin, "non-member": outsider}
    (w.deleted_id,) = [d.deleted_id for d in trash.workspace_secrets if d.summary.key == "GONE"]
    return w


# --------------------------------------------------------------------------------------------
# Each RPC as a function of the field under test


@dataclass(frozen=True)
class Call:
    service: str
    method: str
    request: Message
    md: list[tuple[str, str]]


Builder = Callable[[World, str, dict[str, Any]], Call]


def _store(method: str, request: Message, user: str) -> Call:
    return Call("secrets.v1.SecretStore", method, request, metadata("editor", user))


def list_secrets(w: World, user: str, o: dict[str, Any]) -> Call:
    request = spb.ListSecretsRequest(
        workspace_id=o.get("workspace_id", w.ws), page_size=o.get("page_size", 0), page_token=o.get("page_token", "")
    )
    if "expiring_within" in o:
        request.expiring_within.CopyFrom(o["expiring_within"])
    return _store("ListSecrets", request, user)


def save_secrets(w: World, user: str, o: dict[str, Any]) -> Call:
    # expected_revision -1 never matches: nothing is ever written, valid input ends in ABORTED.
    if "rename_to" in o:
        change = spb.SecretChange(key="K", rename_to=o["rename_to"])
    else:
        change = spb.SecretChange(key=o.get("key", "NEWKEY"), value=o.get("value", "v"))
    request = spb.SaveSecretsRequest(
        workspace_id=o.get("workspace_id", w.ws),
        scope=o.get("scope", W),
        expected_revision=o.get("expected_revision", -1),
        changes=[change],
        acknowledge_in_use=o.get("acknowledge_in_use", False),
    )
    return _store("SaveSecrets", request, user)


def import_dotenv(w: World, user: str, o: dict[str, Any]) -> Call:
    request = spb.ImportDotenvRequest(
        workspace_id=o.get("workspace_id", w.ws),
        scope=o.get("scope", W),
        content=o.get("content", "IMPORTED=1\n"),
        dry_run=o.get("dry_run", True),
        overwrite_existing=True,
        expected_revision=o.get("expected_revision", 0),
    )
    return _store("ImportDotenv", request, user)


def get_secret(w: World, user: str, o: dict[str, Any]) -> Call:
    request = spb.GetSecretRequest(
        workspace_id=o.get("workspace_id", w.ws), scope=o.get("scope", W), key=o.get("key", "K")
    )
    return _store("GetSecret", request, user)


def update_details(w: World, user: str, o: dict[str, Any]) -> Call:
    request = spb.UpdateSecretDetailsRequest(
        workspace_id=o.get("workspace_id", w.ws),
        scope=o.get("scope", W),
        key=o.get("key", "K"),
        description=o.get("description", "hostile input tests"),
    )
    if "display_name" in o:
        request.display_name = o["display_name"]
    if "expires_at" in o:
        request.expires_at.CopyFrom(o["expires_at"])
    request.clear_expires_at = o.get("clear_expires_at", False)
    return _store("UpdateSecretDetails", request, user)


def set_member(w: World, user: str, o: dict[str, Any]) -> Call:
    request = spb.SetSecretMemberRequest(
        workspace_id=o.get("workspace_id", w.ws),
        key=o.get("key", "K"),
        email=o.get("email", w.member_email),
        role=o.get("role", common.SECRET_ROLE_MEMBER),
    )
    return _store("SetSecretMember", request, user)


def remove_member(w: World, user: str, o: dict[str, Any]) -> Call:
    # plain_email is a workspace member who never holds a role on K: valid input is NOT_FOUND.
    request = spb.RemoveSecretMemberRequest(
        workspace_id=o.get("workspace_id", w.ws), key=o.get("key", "K"), email=o.get("email", w.plain_email)
    )
    return _store("RemoveSecretMember", request, user)


def restore_version(w: World, user: str, o: dict[str, Any]) -> Call:
    # Version 999 is never kept: valid input ends in NOT_FOUND and nothing is written.
    request = spb.RestoreSecretVersionRequest(
        workspace_id=o.get("workspace_id", w.ws),
        scope=o.get("scope", W),
        key=o.get("key", "K"),
        version=o.get("version", 999),
    )
    return _store("RestoreSecretVersion", request, user)


def list_referenceable(w: World, user: str, o: dict[str, Any]) -> Call:
    request = spb.ListReferenceableRequest(
        workspace_id=o.get("workspace_id", w.ws),
        prefix=o.get("prefix", "K"),
        page_size=o.get("page_size", 0),
        page_token=o.get("page_token", ""),
    )
    return _store("ListReferenceable", request, user)


# The trash. NEVER_DELETED is no secret's id: valid input ends in NOT_FOUND and nothing changes.
NEVER_DELETED = 2**62


def list_deleted(w: World, user: str, o: dict[str, Any]) -> Call:
    return _store("ListDeletedSecrets", spb.ListDeletedSecretsRequest(workspace_id=o.get("workspace_id", w.ws)), user)


def restore_deleted(w: World, user: str, o: dict[str, Any]) -> Call:
    request = spb.RestoreDeletedSecretRequest(
        workspace_id=o.get("workspace_id", w.ws),
        scope=o.get("scope", W),
        deleted_id=o.get("deleted_id", NEVER_DELETED),
    )
    return _store("RestoreDeletedSecret", request, user)


def purge_deleted(w: World, user: str, o: dict[str, Any]) -> Call:
    request = spb.PurgeDeletedSecretRequest(
        workspace_id=o.get("workspace_id", w.ws),
        scope=o.get("scope", W),
        deleted_id=o.get("deleted_id", NEVER_DELETED),
    )
    return _store("PurgeDeletedSecret", request, user)


def explain(w: World, user: str, o: dict[str, Any]) -> Call:
    automated = "workflow_owner_id" in o or o.get("trigger") == common.TRIGGER_API
    request = spb.ExplainReferencesRequest(
        workspace_id=o.get("workspace_id", w.ws),
        trigger=o.get("trigger", common.TRIGGER_API if automated else common.TRIGGER_MANUAL),
        triggering_user_id=o.get("triggering_user_id", ""),
        workflow_owner_id=o.get("workflow_owner_id", w.admin if automated else ""),
        blocks=[common.BlockInputs(block_id=o.get("block_id", "b"), inputs=struct({"v": "{{K}}"}))],
    )
    return _store("ExplainReferences", request, user)


def resolve(w: World, user: str, o: dict[str, Any]) -> Call:
    # `user` is the run user here: the executor acts for no user.
    automated = "workflow_owner_id" in o
    request = rpb.ResolveInputsRequest(
        workspace_id=o.get("workspace_id", w.ws),
        workflow_id=o.get("workflow_id", "wf-hostile"),
        execution_id=o.get("execution_id", uid("exec")),
        trigger=o.get("trigger", common.TRIGGER_API if automated else common.TRIGGER_MANUAL),
        triggering_user_id=o.get("triggering_user_id", "" if automated else user),
        workflow_owner_id=o.get("workflow_owner_id", ""),
        blocks=[common.BlockInputs(block_id=o.get("block_id", "b"), inputs=struct({"v": "{{K}}"}))],
    )
    return Call("secrets.v1.Resolver", "ResolveInputs", request, metadata("executor"))


def put_member(w: World, user: str, o: dict[str, Any]) -> Call:
    fresh = uid("new")
    request = dpb.PutWorkspaceMemberRequest(
        workspace_id=o.get("workspace_id", w.dir_ws),
        user_id=o.get("user_id", fresh),
        email=o.get("email", f"{fresh}@example.com"),
        permission=o.get("permission", READ),
    )
    return Call("secrets.v1.Directory", "PutWorkspaceMember", request, metadata("directory"))


def remove_ws_member(w: World, user: str, o: dict[str, Any]) -> Call:
    request = dpb.RemoveWorkspaceMemberRequest(
        workspace_id=o.get("workspace_id", w.dir_ws), user_id=o.get("user_id", uid("nobody"))
    )
    return Call("secrets.v1.Directory", "RemoveWorkspaceMember", request, metadata("directory"))


def list_ws_members(w: World, user: str, o: dict[str, Any]) -> Call:
    request = dpb.ListWorkspaceMembersRequest(
        workspace_id=o.get("workspace_id", w.dir_ws),
        page_size=o.get("page_size", 0),
        page_token=o.get("page_token", ""),
    )
    return Call("secrets.v1.Directory", "ListWorkspaceMembers", request, metadata("directory"))


def audit_events(w: World, user: str, o: dict[str, Any]) -> Call:
    request = opb.ListAuditEventsRequest(
        workspace_id=o.get("workspace_id", w.ws),
        page_size=o.get("page_size", 5),
        page_token=o.get("page_token", ""),
        principal=o.get("principal", ""),
        user_id=o.get("user_id", ""),
        key=o.get("key", ""),
        action=o.get("action", ""),
    )
    for name in ("start_time", "end_time"):
        if name in o:
            getattr(request, name).CopyFrom(o[name])
    return Call("secrets.v1.Operations", "ListAuditEvents", request, metadata("ops"))


def key_status(w: World, user: str, o: dict[str, Any]) -> Call:
    return Call("secrets.v1.Operations", "GetKeyStatus", opb.GetKeyStatusRequest(), metadata("ops"))


def rotate_keys(w: World, user: str, o: dict[str, Any]) -> Call:
    return Call("secrets.v1.Operations", "RotateKeys", opb.RotateKeysRequest(), metadata("ops"))


def rotate_data_keys(w: World, user: str, o: dict[str, Any]) -> Call:
    # dir_ws never stores a secret, so it has no data key: valid input ends in NOT_FOUND.
    if "user_id" in o:
        request = opb.RotateDataKeysRequest(user_id=o["user_id"])
    else:
        request = opb.RotateDataKeysRequest(workspace_id=o.get("workspace_id", w.dir_ws))
    return Call("secrets.v1.Operations", "RotateDataKeys", request, metadata("ops"))


# Every RPC but the orchestrator's three (IssueRunGrant, RevokeRunGrant, EndRun), which this
# module's server has no principal for.
ALL_RPCS: dict[str, Builder] = {
    "ListSecrets": list_secrets,
    "SaveSecrets": save_secrets,
    "ImportDotenv": import_dotenv,
    "GetSecret": get_secret,
    "UpdateSecretDetails": update_details,
    "SetSecretMember": set_member,
    "RemoveSecretMember": remove_member,
    "RestoreSecretVersion": restore_version,
    "ListReferenceable": list_referenceable,
    "ExplainReferences": explain,
    "ListDeletedSecrets": list_deleted,
    "RestoreDeletedSecret": restore_deleted,
    "PurgeDeletedSecret": purge_deleted,
    "ResolveInputs": resolve,
    "PutWorkspaceMember": put_member,
    "RemoveWorkspaceMember": remove_ws_member,
    "ListWorkspaceMembers": list_ws_members,
    "GetKeyStatus": key_status,
    "RotateKeys": rotate_keys,
    "RotateDataKeys": rotate_data_keys,
    "ListAuditEvents": audit_events,
}

# What a valid request of each RPC answers, per caller: the proof that the hostile value, and
# nothing else in the request, decides the answer.
EXPECTED_BASELINE: dict[str, dict[str, grpc.StatusCode]] = {
    "SaveSecrets": {"member": grpc.StatusCode.ABORTED},
    "RemoveSecretMember": {"member": grpc.StatusCode.NOT_FOUND},
    "RestoreSecretVersion": {"member": grpc.StatusCode.NOT_FOUND},
    "RestoreDeletedSecret": {"member": grpc.StatusCode.NOT_FOUND},
    "PurgeDeletedSecret": {"member": grpc.StatusCode.NOT_FOUND},
    "RemoveWorkspaceMember": {"member": grpc.StatusCode.NOT_FOUND, "-": grpc.StatusCode.NOT_FOUND},
    "RotateDataKeys": {"-": grpc.StatusCode.NOT_FOUND},
}

STORE = ["member", "non-member"]
RUN_USER = ["member", "non-member"]  # for the resolver, the run user's membership
NONE = ["-"]  # services that act for no user


@dataclass(frozen=True)
class Target:
    rpc: str
    field: str  # the request field (also what the error must name)
    values: dict[str, str]
    callers: list[str]


TARGETS = [
    Target("ListSecrets", "workspace_id", _ids(True), STORE),
    Target("SaveSecrets", "workspace_id", _ids(True), STORE),
    Target("SaveSecrets", "key", _keys(), STORE),
    Target("SaveSecrets", "rename_to", _keys(), STORE),
    Target("ImportDotenv", "workspace_id", _ids(True), STORE),
    Target("GetSecret", "workspace_id", _ids(True), STORE),
    Target("GetSecret", "key", _keys(), STORE),
    Target("UpdateSecretDetails", "workspace_id", _ids(True), STORE),
    Target("UpdateSecretDetails", "key", _keys(), STORE),
    Target("SetSecretMember", "workspace_id", _ids(True), STORE),
    Target("SetSecretMember", "key", _keys(), STORE),
    Target("SetSecretMember", "email", _emails(True), STORE),
    Target("RemoveSecretMember", "workspace_id", _ids(True), STORE),
    Target("RemoveSecretMember", "key", _keys(), STORE),
    Target("RemoveSecretMember", "email", _emails(True), STORE),
    Target("RestoreSecretVersion", "workspace_id", _ids(True), STORE),
    Target("RestoreSecretVersion", "key", _keys(), STORE),
    Target("ListReferenceable", "workspace_id", _ids(True), STORE),
    Target("ListReferenceable", "prefix", _prefixes(), STORE),
    Target("ListSecrets", "page_token", _page_tokens(), STORE),
    Target("ListReferenceable", "page_token", _page_tokens(), STORE),
    Target("ListDeletedSecrets", "workspace_id", _ids(True), STORE),
    Target("RestoreDeletedSecret", "workspace_id", _ids(True), STORE),
    Target("PurgeDeletedSecret", "workspace_id", _ids(True), STORE),
    Target("ExplainReferences", "workspace_id", _ids(True), STORE),
    # Empty means "the caller" for a manual run.
    Target("ExplainReferences", "triggering_user_id", _ids(False), STORE),
    Target("ExplainReferences", "workflow_owner_id", _ids(True), STORE),
    Target("ExplainReferences", "block_id", _ids(True), STORE),
    Target("ResolveInputs", "workspace_id", _ids(True), RUN_USER),
    Target("ResolveInputs", "workflow_id", _ids(False), RUN_USER),
    Target("ResolveInputs", "execution_id", _ids(False), RUN_USER),
    Target("ResolveInputs", "triggering_user_id", _ids(True), RUN_USER),
    Target("ResolveInputs", "workflow_owner_id", _ids(True), RUN_USER),
    Target("ResolveInputs", "block_id", _ids(True), RUN_USER),
    Target("PutWorkspaceMember", "workspace_id", _ids(True), NONE),
    Target("PutWorkspaceMember", "user_id", _ids(True), NONE),
    Target("PutWorkspaceMember", "email", _emails(True), NONE),
    Target("RemoveWorkspaceMember", "workspace_id", _ids(True), NONE),
    Target("RemoveWorkspaceMember", "user_id", _ids(True), NONE),
    Target("ListWorkspaceMembers", "workspace_id", _ids(True), NONE),
    Target("ListWorkspaceMembers", "page_token", _page_tokens(), NONE),
    # Empty means "every workspace".
    Target("ListAuditEvents", "workspace_id", _ids(False), NONE),
    Target("ListAuditEvents", "page_token", _page_tokens(), NONE),
    # Exactly one of the two: the other is empty.
    Target("RotateDataKeys", "workspace_id", _ids(True), NONE),
    Target("RotateDataKeys", "user_id", _ids(True), NONE),
    # The filters: empty means "any".
    Target("ListAuditEvents", "principal", _ids(False), NONE),
    Target("ListAuditEvents", "user_id", _ids(False), NONE),
    Target("ListAuditEvents", "action", _ids(False), NONE),
    Target("ListAuditEvents", "key", {k: v for k, v in _keys().items() if v}, NONE),
]


# --------------------------------------------------------------------------------------------
# Calling and judging


async def invoke(channel: grpc.aio.Channel, call: Call) -> grpc.aio.AioRpcError | None:
    """None when the call succeeded, else the error (a generic call: any RPC, one code path)."""
    rpc = channel.unary_unary(
        f"/{call.service}/{call.method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    try:
        await rpc(call.request, metadata=call.md, timeout=15)
    except grpc.aio.AioRpcError as err:
        return err
    return None


def violations(err: grpc.aio.AioRpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    found = []
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    found.extend(bad.field_violations)
    return found


def names_field(err: grpc.aio.AioRpcError, name: str) -> bool:
    if name in (err.details() or ""):
        return True
    return any(name in v.field for v in violations(err))


def code_of(err: grpc.aio.AioRpcError | None) -> grpc.StatusCode:
    return grpc.StatusCode.OK if err is None else err.code()


def describe(err: grpc.aio.AioRpcError | None, caplog: pytest.LogCaptureFixture) -> str:
    """The status, and for an INTERNAL the exception the server logged for its reference id."""
    if err is None:
        return "OK (accepted)"
    text = f"{err.code().name} {(err.details() or '')[:160]!r}"
    found = re.search(r"reference ([0-9a-f]+)", err.details() or "")
    if found:
        for record in caplog.records:
            message = record.getMessage()
            if found.group(1) in message:
                text += " <- " + server_cause(message)
    return text


def server_cause(message: str) -> str:
    """'ExcType at file:line in fn' of the innermost service frame of a logged traceback."""
    first = message.splitlines()[0]
    exc_type = first.rsplit(": ", 1)[-1]
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', message)
    ours = [f for f in frames if "/service/" in f[0]] or frames
    where = ""
    if ours:
        path, line, fn = ours[-1]
        where = f" at {path.split('/service/', 1)[-1]}:{line} in {fn}()"
        chain = " > ".join(f"{fn}" for _, _, fn in ours[-4:])
        where += f" [{chain}]"
    return exc_type + where


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(str(value))} chars)"


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR, logger="service")
    return caplog


async def baseline_ok(channel: grpc.aio.Channel, w: World, rpc: str, caller: str) -> None:
    user = w.callers.get(caller, w.admin)
    err = await invoke(channel, ALL_RPCS[rpc](w, user, {}))
    wanted = EXPECTED_BASELINE.get(rpc, {}).get(caller)
    got = code_of(err)
    if caller == "non-member" and rpc not in ("ResolveInputs",):
        # A non-member is turned away (or, in personal scope, sees only their own).
        assert got not in (*BAD, grpc.StatusCode.INVALID_ARGUMENT), (rpc, caller, got)
        return
    if wanted is None:
        wanted = grpc.StatusCode.OK
    assert got == wanted, f"the valid {rpc} request as {caller} got {got.name}: {err and err.details()}"


# --------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize(
    ("target", "caller"),
    [(t, c) for t in TARGETS for c in t.callers],
    ids=[f"{t.rpc}.{t.field}-{c}" for t in TARGETS for c in t.callers],
)
async def test_hostile_identifier_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture, target: Target, caller: str
) -> None:
    await baseline_ok(channel, world, target.rpc, caller)
    user = world.callers.get(caller, world.admin)
    wrong: list[str] = []
    for label, value in target.values.items():
        err = await invoke(channel, ALL_RPCS[target.rpc](world, user, {target.field: value}))
        ok = err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT and names_field(err, target.field)
        if caller == "non-member" and target.field != "workspace_id" and code_of(err) == DENIED:
            # A non-member may be turned away before the body is looked at (finding 16: the
            # inputs are walked only after authorisation); a refusal reveals nothing.
            ok = True
        if not ok:
            wrong.append(f"  {target.field}={label} {show(value)}: {describe(err, server_log)}")
    assert not wrong, (
        f"{target.rpc} as {caller}: these {target.field} values did not get INVALID_ARGUMENT naming "
        f"{target.field!r}:\n" + "\n".join(wrong)
    )


def _enum_cases() -> list[tuple[str, str, int]]:
    cases = []
    for rpc in (
        "SaveSecrets",
        "ImportDotenv",
        "GetSecret",
        "UpdateSecretDetails",
        "RestoreSecretVersion",
        "RestoreDeletedSecret",
        "PurgeDeletedSecret",
    ):
        cases += [(rpc, "scope", n) for n in (0, 3, 99, -1, 2**31 - 1)]
    cases += [("SetSecretMember", "role", n) for n in (0, 3, 99, -1)]
    cases += [("PutWorkspaceMember", "permission", n) for n in (0, 4, 99, -1)]
    cases += [(rpc, "trigger", n) for rpc in ("ExplainReferences", "ResolveInputs") for n in (0, 5, 99, -1)]
    return cases


@pytest.mark.parametrize(("rpc", "field_name", "number"), _enum_cases(), ids=lambda v: str(v))
async def test_unknown_enum_number_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel,
    world: World,
    server_log: pytest.LogCaptureFixture,
    rpc: str,
    field_name: str,
    number: int,
) -> None:
    err = await invoke(channel, ALL_RPCS[rpc](world, world.admin, {field_name: number}))
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, describe(err, server_log)
    assert names_field(err, field_name), err.details()


@pytest.mark.parametrize("version", [0, -1, -(2**63)])
async def test_non_positive_restore_version_is_invalid_argument(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture, version: int
) -> None:
    for user in (world.admin, world.outsider):
        err = await invoke(channel, restore_version(world, user, {"version": version}))
        assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, describe(err, server_log)
        assert names_field(err, "version"), err.details()


@pytest.mark.parametrize(
    ("rpc", "overrides", "allowed"),
    [
        ("RestoreSecretVersion", {"version": 2**63 - 1}, {grpc.StatusCode.NOT_FOUND}),
        ("SaveSecrets", {"expected_revision": -(2**63)}, {grpc.StatusCode.ABORTED}),
        ("SaveSecrets", {"expected_revision": 2**63 - 1}, {grpc.StatusCode.ABORTED}),
        ("ImportDotenv", {"expected_revision": -1, "dry_run": False}, {grpc.StatusCode.ABORTED}),
        ("ImportDotenv", {"expected_revision": 2**63 - 1, "dry_run": False}, {grpc.StatusCode.ABORTED}),
        ("ListAuditEvents", {"page_size": 2**31 - 1}, {grpc.StatusCode.OK}),
        ("ListAuditEvents", {"page_size": -1}, {grpc.StatusCode.INVALID_ARGUMENT}),
        ("ListAuditEvents", {"page_size": -(2**31)}, {grpc.StatusCode.INVALID_ARGUMENT}),
        *[
            (rpc, {"page_size": size}, {grpc.StatusCode.OK if size > 0 else grpc.StatusCode.INVALID_ARGUMENT})
            for rpc in ("ListSecrets", "ListReferenceable", "ListWorkspaceMembers")
            for size in (2**31 - 1, -1, -(2**31))
        ],
        *[
            (rpc, {"deleted_id": number}, {grpc.StatusCode.INVALID_ARGUMENT})
            for rpc in ("RestoreDeletedSecret", "PurgeDeletedSecret")
            for number in (0, -1, -(2**63))
        ],
        ("RestoreDeletedSecret", {"deleted_id": 2**63 - 1}, {grpc.StatusCode.NOT_FOUND}),
        ("PurgeDeletedSecret", {"deleted_id": 2**63 - 1}, {grpc.StatusCode.NOT_FOUND}),
        # In-use guard acknowledged on a batch whose revision never matches: still only ABORTED.
        ("SaveSecrets", {"acknowledge_in_use": True, "expected_revision": 2**63 - 1}, {grpc.StatusCode.ABORTED}),
    ],
    ids=lambda v: str(v),
)
async def test_extreme_numbers_get_a_real_status(
    channel: grpc.aio.Channel,
    world: World,
    server_log: pytest.LogCaptureFixture,
    rpc: str,
    overrides: dict[str, Any],
    allowed: set[grpc.StatusCode],
) -> None:
    err = await invoke(channel, ALL_RPCS[rpc](world, world.admin, overrides))
    assert code_of(err) in allowed, describe(err, server_log)
    if code_of(err) == grpc.StatusCode.INVALID_ARGUMENT:
        assert names_field(err, next(iter(overrides))), err.details()


# -- google.protobuf.Timestamp and Duration fields at and past the ends of their ranges ---------

FIRST = -62_135_596_800  # 0001-01-01T00:00:00Z
LAST = 253_402_300_799  # 9999-12-31T23:59:59Z

BAD_TIMES = {
    "seconds 2**63-1": (2**63 - 1, 0),
    "seconds -2**63": (-(2**63), 0),
    "a second after 9999": (LAST + 1, 0),
    "a second before year 1": (FIRST - 1, 0),
    "nanos -1": (0, -1),
    "nanos 10**9": (0, 10**9),
    "nanos 2**31-1": (0, 2**31 - 1),
    "nanos -2**31": (0, -(2**31)),
}


def ts(seconds: int, nanos: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def duration(seconds: int, nanos: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(
    ("rpc", "field_name"),
    [("UpdateSecretDetails", "expires_at"), ("ListAuditEvents", "start_time"), ("ListAuditEvents", "end_time")],
)
async def test_timestamps_out_of_range_are_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture, rpc: str, field_name: str
) -> None:
    callers = ["member", "non-member"] if rpc == "UpdateSecretDetails" else ["-"]
    wrong = []
    for caller in callers:
        user = world.callers.get(caller, world.admin)
        for label, (seconds, nanos) in BAD_TIMES.items():
            err = await invoke(channel, ALL_RPCS[rpc](world, user, {field_name: ts(seconds, nanos)}))
            ok = code_of(err) == grpc.StatusCode.INVALID_ARGUMENT and err is not None and names_field(err, field_name)
            ok = ok or (caller == "non-member" and code_of(err) == DENIED)
            if not ok:
                wrong.append(f"  {caller} {field_name}={label}: {describe(err, server_log)}")
    assert not wrong, f"{rpc}: these {field_name} values did not get INVALID_ARGUMENT naming it:\n" + "\n".join(wrong)


async def test_expires_at_with_clear_expires_at_is_invalid_argument(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture
) -> None:
    err = await invoke(
        channel, update_details(world, world.admin, {"expires_at": ts(LAST - 1, 0), "clear_expires_at": True})
    )
    assert code_of(err) == grpc.StatusCode.INVALID_ARGUMENT, describe(err, server_log)
    assert err is not None and (names_field(err, "expires_at") or names_field(err, "clear_expires_at")), err.details()


async def test_audit_time_filters_at_the_ends_of_the_range_and_reversed(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture
) -> None:
    widest = {"start_time": ts(FIRST, 0), "end_time": ts(LAST, 999_999_999)}
    err = await invoke(channel, audit_events(world, "-", widest))
    assert err is None, describe(err, server_log)
    for reversed_ in (
        {"start_time": ts(LAST, 0), "end_time": ts(FIRST, 0)},
        {"start_time": ts(5, 0), "end_time": ts(5, 0)},
    ):
        err = await invoke(channel, audit_events(world, "-", reversed_))
        assert code_of(err) == grpc.StatusCode.INVALID_ARGUMENT, describe(err, server_log)
        assert err is not None and names_field(err, "end_time"), err.details()


BAD_DURATIONS = {
    "-1 s": (-1, 0),
    "-1 ns": (0, -1),
    "mixed signs": (1, -1),
    "seconds -2**63": (-(2**63), 0),
    "seconds 2**63-1": (2**63 - 1, 0),
    "Duration's own maximum (10,000 years)": (315_576_000_000, 0),
    "nanos 10**9": (0, 10**9),
    "nanos 2**31-1": (0, 2**31 - 1),
    "nanos -2**31": (0, -(2**31)),
}


async def test_expiring_within_out_of_range_is_invalid_argument(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture
) -> None:
    wrong = []
    for caller in ("member", "non-member"):
        user = world.callers[caller]
        for label, (seconds, nanos) in BAD_DURATIONS.items():
            err = await invoke(channel, list_secrets(world, user, {"expiring_within": duration(seconds, nanos)}))
            ok = code_of(err) == grpc.StatusCode.INVALID_ARGUMENT and err is not None
            if not (ok and names_field(err, "expiring_within")):  # type: ignore[arg-type]
                wrong.append(f"  {caller} expiring_within={label}: {describe(err, server_log)}")
        # The longest window allowed, and the shortest, are ordinary listings.
        for seconds, nanos in ((100 * 366 * 86400, 0), (0, 1)):
            err = await invoke(channel, list_secrets(world, user, {"expiring_within": duration(seconds, nanos)}))
            if caller == "member" and err is not None:
                wrong.append(f"  {caller} valid expiring_within {seconds} s {nanos} ns: {describe(err, server_log)}")
            if caller == "non-member" and code_of(err) != DENIED:
                wrong.append(f"  {caller} valid expiring_within {seconds} s {nanos} ns: {describe(err, server_log)}")
    assert not wrong, "ListSecrets.expiring_within:\n" + "\n".join(wrong)


# -- page tokens forged in today's format, with the right digest --------------------------------


def _forged(listing: str, digest: str, cursors: dict[str, tuple[str | int, ...]]) -> dict[str, str]:
    from service.domain import paging

    return {label: paging.encode_token(listing, digest, cursor) for label, cursor in cursors.items()}


def forged_tokens(w: World, rpc: str) -> tuple[dict[str, str], str]:
    """Tokens that decode, for the right listing and filters, but hold a cursor no page ends at;
    and one well-formed token (the proof that the digest is right: it must be accepted)."""
    from service.app import audit_listing, listings
    from service.domain import paging

    odd_text = {
        "empty": "",
        "NUL": "\x00",
        "NUL inside": "a\x00b",
        "newline": "a\nb",
        "lone surrogate": "\ud800",
        "257 characters": "i" * 257,
        "10,000 characters": "i" * 10_000,
    }
    if rpc in ("ListSecrets", "ListReferenceable"):
        listing = listings.SECRETS_LISTING if rpc == "ListSecrets" else listings.REFERENCEABLE_LISTING
        prefix = "K" if rpc == "ListReferenceable" else ""
        digest = paging.filter_digest(listing, w.admin, w.ws, prefix)
        cursors: dict[str, tuple[str | int, ...]] = {f"key {k}": (1, v) for k, v in odd_text.items()}
        cursors |= {f"scope {n}": (n, "K") for n in (0, 3, -1, 2**63, 2**64, -(2**63) - 1)}
        return _forged(listing, digest, cursors), paging.encode_token(listing, digest, (1, "A"))
    if rpc == "ListWorkspaceMembers":
        digest = paging.filter_digest(listings.MEMBERS_LISTING, w.dir_ws)
        cursors = {f"user_id {k}": (v,) for k, v in odd_text.items()}
        return _forged(listings.MEMBERS_LISTING, digest, cursors), paging.encode_token(
            listings.MEMBERS_LISTING, digest, ("a",)
        )
    assert rpc == "ListAuditEvents"
    digest = paging.filter_digest(audit_listing.LISTING, w.ws, "", "", "", "", "", "")
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    cursors = {f"id {n}": (now, n) for n in (0, -1, 2**63, 2**64, -(2**63) - 1, 10**40)}
    cursors |= {f"time {n}": (n, 5) for n in (2**63, -(2**63) - 1, 10**40, -(10**40), FIRST * 1_000_000)}
    cursors["time 9999-12-31"] = (LAST * 1_000_000, 5)
    return _forged(audit_listing.LISTING, digest, cursors), paging.encode_token(audit_listing.LISTING, digest, (now, 5))


@pytest.mark.parametrize("rpc", ["ListSecrets", "ListReferenceable", "ListWorkspaceMembers", "ListAuditEvents"])
async def test_forged_cursors_in_todays_format_are_invalid_argument(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture, rpc: str
) -> None:
    """Tokens are not MAC'd, so anyone can spell a cursor. ListWorkspaceMembers checked its
    cursor's user_id for length only: a NUL or a lone surrogate reached Postgres and came back
    INTERNAL, and a newline was taken as a place to continue from."""
    tokens, well_formed = forged_tokens(world, rpc)
    err = await invoke(channel, ALL_RPCS[rpc](world, world.admin, {"page_token": well_formed}))
    assert err is None, (
        f"a well-formed cursor was refused (so the forged ones prove nothing): {describe(err, server_log)}"
    )
    wrong = []
    for label, value in tokens.items():
        err = await invoke(channel, ALL_RPCS[rpc](world, world.admin, {"page_token": value}))
        if not (
            code_of(err) == grpc.StatusCode.INVALID_ARGUMENT and err is not None and names_field(err, "page_token")
        ):
            wrong.append(f"  cursor {label}: {describe(err, server_log)}")
    assert not wrong, f"{rpc}: forged cursors not refused as INVALID_ARGUMENT naming page_token:\n" + "\n".join(wrong)


# -- the trash: a real deleted secret, named by those who may not touch it -----------------------


@pytest.mark.parametrize("rpc", ["RestoreDeletedSecret", "PurgeDeletedSecret"])
async def test_another_callers_trash_is_refused_without_naming_the_secret(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture, rpc: str
) -> None:
    # A non-member naming the workspace's deleted secret: refused as any non-member is.
    err = await invoke(channel, ALL_RPCS[rpc](world, world.outsider, {"deleted_id": world.deleted_id}))
    assert code_of(err) == DENIED, describe(err, server_log)
    assert err is not None and "GONE" not in (err.details() or "")
    # The same id in the caller's personal trash (which does not hold it): NOT_FOUND, for anyone.
    for user in (world.outsider, world.admin):
        err = await invoke(
            channel, ALL_RPCS[rpc](world, user, {"deleted_id": world.deleted_id, "scope": common.SCOPE_PERSONAL})
        )
        assert code_of(err) == grpc.StatusCode.NOT_FOUND, describe(err, server_log)
        assert err is not None and "GONE" not in (err.details() or "")
    # Still in the trash, untouched.
    listing = await Api(channel).store.ListDeletedSecrets(
        spb.ListDeletedSecretsRequest(workspace_id=world.ws), metadata=metadata("editor", world.admin)
    )
    assert [d.deleted_id for d in listing.workspace_secrets if d.summary.key == "GONE"] == [world.deleted_id]


# -- acknowledge_in_use: a bool spelled every way the wire allows ---------------------------------


@pytest.mark.parametrize(
    ("label", "tail", "allowed"),
    [
        ("varint 2", b"\x28\x02", grpc.StatusCode.ABORTED),
        ("varint 2**64-1", b"\x28" + b"\xff" * 9 + b"\x01", grpc.StatusCode.ABORTED),
        ("twice, false then true", b"\x28\x00\x28\x01", grpc.StatusCode.ABORTED),
        # A known field number with the wrong wire type is kept as an unknown field: the flag
        # stays false.
        ("as a length-delimited field", b"\x2a\x01\x01", grpc.StatusCode.ABORTED),
        ("an 11-byte varint", b"\x28" + b"\xff" * 10 + b"\x01", grpc.StatusCode.INVALID_ARGUMENT),
        ("truncated varint", b"\x28\xff", grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_acknowledge_in_use_in_any_wire_spelling_gets_a_real_status(
    channel: grpc.aio.Channel,
    world: World,
    server_log: pytest.LogCaptureFixture,
    label: str,
    tail: bytes,
    allowed: grpc.StatusCode,
) -> None:
    # Deleting K (in the trash's way, and in use by the hostile resolves) on a revision that never
    # matches: whatever the flag reads as, nothing is written.
    call = save_secrets(world, world.admin, {})
    call.request.changes[0].CopyFrom(spb.SecretChange(key="K", delete=True))  # type: ignore[attr-defined]
    payload = call.request.SerializeToString() + tail
    rpc_call = channel.unary_unary(
        f"/{call.service}/{call.method}", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    try:
        await rpc_call(payload, metadata=call.md, timeout=10)
    except grpc.aio.AioRpcError as err:
        assert err.code() == allowed, f"{label}: {describe(err, server_log)}"
        return
    raise AssertionError(f"{label}: a save on revision -1 succeeded")


@pytest.mark.parametrize(
    ("rpc", "field_name"),
    [
        ("SaveSecrets", "value"),
        ("ImportDotenv", "content"),
        ("UpdateSecretDetails", "display_name"),
        ("UpdateSecretDetails", "description"),
    ],
)
async def test_free_text_with_control_characters_never_internal(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture, rpc: str, field_name: str
) -> None:
    texts = {
        "NUL": "a\x00b",
        "only NUL": "\x00",
        "\\x01": "a\x01b",
        "DEL": "a\x7fb",
        "C1": "a\x85b",
        "dotenv NUL value": "K9=a\x00b\nK8=`\x00`\n",
        "dotenv NUL key": "K\x00=v\n",
        "lone surrogate-free odd unicode": "\u2028\ufeff\U0010ffff",
        "10,000 characters": "x" * 10_000,
    }
    wrong = []
    for label, text in texts.items():
        overrides: dict[str, Any] = {field_name: text}
        if rpc == "UpdateSecretDetails":
            overrides["key"] = "K"
        err = await invoke(channel, ALL_RPCS[rpc](world, world.admin, overrides))
        if code_of(err) in BAD:
            wrong.append(f"  {field_name}={label} {show(text)}: {describe(err, server_log)}")
    assert not wrong, f"{rpc}: INTERNAL/UNKNOWN for\n" + "\n".join(wrong)


# -- raw bytes: invalid UTF-8 in every string field, through a generic channel -----------------

MARK = "QQMARKQQ"


def _utf8_cases() -> list[tuple[str, str]]:
    cases = [(t.rpc, t.field) for t in TARGETS]
    cases += [("ExplainReferences", "inputs"), ("ResolveInputs", "inputs"), ("SaveSecrets", "value")]
    cases += [("UpdateSecretDetails", "display_name"), ("ImportDotenv", "content")]
    seen: dict[tuple[str, str], None] = {}
    for case in cases:
        seen[case] = None
    return list(seen)


@pytest.mark.parametrize(("rpc", "field_name"), _utf8_cases(), ids=lambda v: str(v))
async def test_invalid_utf8_in_any_string_field_is_invalid_argument(
    channel: grpc.aio.Channel, world: World, server_log: pytest.LogCaptureFixture, rpc: str, field_name: str
) -> None:
    if field_name == "inputs":
        call = ALL_RPCS[rpc](world, world.admin, {})
        call.request.blocks[0].inputs.CopyFrom(struct({"v": MARK, MARK: "x"}))  # type: ignore[attr-defined]
    else:
        call = ALL_RPCS[rpc](world, world.admin, {field_name: MARK})
    payload = call.request.SerializeToString()
    assert MARK.encode() in payload
    payload = payload.replace(MARK.encode(), b"QQ\xff\xfe\xc0QQQ")
    rpc_call = channel.unary_unary(
        f"/{call.service}/{call.method}", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    try:
        await rpc_call(payload, metadata=call.md, timeout=10)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, describe(err, server_log)
        return
    raise AssertionError(f"{rpc} accepted invalid UTF-8 in {field_name}")


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("/secrets.v1.Operations/GetKeyStatus", b"\xff"),
        ("/secrets.v1.Operations/RotateKeys", b"\x0a\x05\xff\xff"),
        ("/secrets.v1.Operations/ListAuditEvents", b"\x1a\x03\xff\xfe\xc0"),
        ("/secrets.v1.Directory/ListWorkspaceMembers", b"\x0a"),
        ("/secrets.v1.SecretStore/GetSecret", b"\x10" + b"\xff" * 11),
    ],
)
async def test_garbage_payloads_are_invalid_argument(
    channel: grpc.aio.Channel, server_log: pytest.LogCaptureFixture, method: str, payload: bytes
) -> None:
    service = method.split("/")[1]
    role = {"secrets.v1.Operations": "ops", "secrets.v1.Directory": "directory"}.get(service, "editor")
    rpc_call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        await rpc_call(payload, metadata=metadata(role, "someone"), timeout=10)
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, describe(err, server_log)
        return
    raise AssertionError(f"{method} accepted an undecodable payload")


# -- the x-user-id header ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "value", "allowed"),
    [
        ("257 characters", "u" * 257, {grpc.StatusCode.INVALID_ARGUMENT}),
        ("4,000 characters", "u" * 4_000, {grpc.StatusCode.INVALID_ARGUMENT}),
        # Past gRPC's 8 KiB header limit the transport answers RESOURCE_EXHAUSTED itself.
        ("10,000 characters", "u" * 10_000, {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}),
    ],
    ids=["257", "4000", "10000"],
)
async def test_overlong_x_user_id_is_invalid_argument_naming_the_header(
    channel: grpc.aio.Channel,
    world: World,
    server_log: pytest.LogCaptureFixture,
    label: str,
    value: str,
    allowed: set[grpc.StatusCode],
) -> None:
    for rpc in ("ListSecrets", "SaveSecrets", "ExplainReferences"):
        call = ALL_RPCS[rpc](world, "unused", {})
        md = [("authorization", f"Bearer {TOKENS['editor']}"), ("x-user-id", value)]
        err = await invoke(channel, Call(call.service, call.method, call.request, md))
        assert err is not None and err.code() in allowed, f"{rpc}: {describe(err, server_log)}"
        if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert "x-user-id" in (err.details() or ""), err.details()


async def test_empty_x_user_id_is_refused_naming_the_header(channel: grpc.aio.Channel, world: World) -> None:
    md = [("authorization", f"Bearer {TOKENS['editor']}"), ("x-user-id", "")]
    err = await invoke(channel, Call("secrets.v1.SecretStore", "ListSecrets", list_secrets(world, "", {}).request, md))
    assert err is not None and err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT), err
    assert "x-user-id" in (err.details() or "")


@pytest.mark.parametrize(
    "value", ["a\x00b", "\x00", "a\x01b", "a\nb", "a\rb", "a\x7fb", "a\x85b"], ids=lambda v: repr(v)
)
async def test_x_user_id_with_control_characters_is_invalid_argument(server: Server, value: str) -> None:
    """gRPC clients refuse to send control characters in a header, so the server's own check is
    driven directly: the interceptor the server runs, given the header as a transport would."""
    from service.auth import AuthInterceptor, Principals, principals_source

    assert server.settings.principals_file is not None
    interceptor = AuthInterceptor(principals_source(None, Principals.load(server.settings.principals_file)))

    class Details:
        method = "/secrets.v1.SecretStore/ListSecrets"
        invocation_metadata = (("authorization", f"Bearer {TOKENS['editor']}"), ("x-user-id", value))

    reached: list[bool] = []

    async def continuation(details: Any) -> Any:
        reached.append(True)
        return None

    handler = await interceptor.intercept_service(continuation, Details())  # type: ignore[arg-type]
    assert not reached, "the call went through to the servicer"

    class Aborted(Exception):
        pass

    class Context:
        code: grpc.StatusCode | None = None
        message = ""

        async def abort(self, code: grpc.StatusCode, message: str, *args: Any, **kwargs: Any) -> None:
            Context.code, Context.message = code, message
            raise Aborted

    with pytest.raises(Aborted):
        await handler.unary_unary(b"", Context())
    assert Context.code == grpc.StatusCode.INVALID_ARGUMENT, Context.code
    assert "x-user-id" in Context.message


# -- the limits themselves: exactly 256 characters (emails 320) are valid ----------------------


async def test_identifiers_of_exactly_256_characters_and_emails_of_320_are_accepted(
    channel: grpc.aio.Channel, server_log: pytest.LogCaptureFixture
) -> None:
    api = Api(channel)
    ws = uid("ws").ljust(256, "w")
    user = uid("u").ljust(256, "u")
    email = uid("e").ljust(64, "e") + "@" + "d" * 251 + ".com"
    assert (len(ws), len(user), len(email)) == (256, 256, 320)
    failures = []
    calls: list[tuple[str, Any]] = [
        (
            "PutWorkspaceMember",
            lambda: api.directory.PutWorkspaceMember(
                dpb.PutWorkspaceMemberRequest(workspace_id=ws, user_id=user, email=email, permission=ADMIN),
                metadata=metadata("directory"),
            ),
        ),
        (
            "ListSecrets with x-user-id of 256",
            lambda: api.store.ListSecrets(spb.ListSecretsRequest(workspace_id=ws), metadata=metadata("editor", user)),
        ),
        (
            "ResolveInputs with 256-character workflow and execution ids",
            lambda: api.resolver.ResolveInputs(
                rpb.ResolveInputsRequest(
                    workspace_id=ws,
                    workflow_id="f" * 256,
                    execution_id="x" * 256,
                    trigger=common.TRIGGER_MANUAL,
                    triggering_user_id=user,
                    blocks=[common.BlockInputs(block_id="b" * 256, inputs=struct({"v": "plain"}))],
                ),
                metadata=metadata("executor"),
            ),
        ),
        (
            "ListAuditEvents with workspace_id of 256",
            lambda: api.ops.ListAuditEvents(opb.ListAuditEventsRequest(workspace_id=ws), metadata=metadata("ops")),
        ),
    ]
    for name, make in calls:
        try:
            await make()
        except grpc.aio.AioRpcError as err:
            failures.append(f"  {name}: {describe(err, server_log)}")
    assert not failures, "SPEC 2.1 allows 256 characters (emails 320), but:\n" + "\n".join(failures)

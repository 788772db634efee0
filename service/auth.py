"""Principals, bearer tokens and the role each service needs (SPEC 3.1, 4.3).

The principals file holds SHA-256 hashes of tokens, never tokens. A presented token is hashed and
compared with every principal's hash in constant time, so the time a call takes says nothing
about how close a guess was.

The file fails closed (SPEC 4.3): an empty list means no principals, and a file that stops
loading (invalid, deleted, unreadable) while the server runs revokes every token; the previous
principals are never kept, or a revocation could be undone by a typo.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import json
import logging
import secrets as pysecrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.app.context import Caller
from service.domain.keys import id_problem
from service.watched import WatchedFile

log = logging.getLogger(__name__)


class Role(enum.StrEnum):
    EDITOR = "editor"
    EXECUTOR = "executor"
    DIRECTORY = "directory"
    OPS = "ops"
    # The service that starts runs: issues, revokes and ends run grants (Resolver).
    ORCHESTRATOR = "orchestrator"


class PrincipalsError(Exception):
    """The principals file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: frozenset[Role]
    token_sha256: bytes
    # Workspace ids or `prefix*` patterns this principal may act on; None: every workspace.
    workspaces: tuple[str, ...] | None = None
    # An executor that may resolve only with a run grant (ResolveInputsRequest.grant).
    requires_grant: bool = False

    def __repr__(self) -> str:
        return f"Principal(name={self.name!r}, roles={sorted(self.roles)!r})"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    # 32 random bytes: a token is a password nobody has to remember, so it can be long.
    return "sst_" + pysecrets.token_urlsafe(32)


def principal_line(name: str, roles: Sequence[str], token: str) -> dict[str, Any]:
    return {"name": name, "roles": list(roles), "token_sha256": hash_token(token)}


def _workspace_patterns(name: str, value: Any) -> tuple[str, ...] | None:
    """A principal's `workspaces`: absent (every workspace) or a non-empty list of workspace ids
    and `prefix*` patterns, each held to the id rule. Anything else makes the file invalid, so a
    typo cannot widen a principal to every workspace."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PrincipalsError(f"principal {name!r}: workspaces must be a non-empty list of ids or prefix* patterns")
    for pattern in value:
        problem = id_problem("workspace pattern", pattern)
        if problem or "*" in pattern[:-1] or pattern == "*":
            raise PrincipalsError(
                f"principal {name!r}: {pattern!r} is not a workspace id or prefix* pattern (omit the field for all)"
            )
    return tuple(value)


class Principals:
    def __init__(self, principals: Sequence[Principal]) -> None:
        self._principals = tuple(principals)

    def __len__(self) -> int:
        return len(self._principals)

    @classmethod
    def from_json(cls, data: Any) -> Principals:
        if not isinstance(data, dict) or not isinstance(data.get("principals"), list):
            raise PrincipalsError('the principals file must be {"principals": [{"name", "roles", "token_sha256"}]}')
        found: list[Principal] = []
        for entry in data["principals"]:
            if not isinstance(entry, dict):
                raise PrincipalsError("every principal must be an object")
            name = entry.get("name")
            digest = entry.get("token_sha256")
            roles = entry.get("roles")
            if not isinstance(name, str) or not name:
                raise PrincipalsError("every principal needs a name")
            if not isinstance(digest, str) or len(digest) != 64:
                raise PrincipalsError(f"principal {name!r}: token_sha256 must be 64 hex characters")
            try:
                raw = bytes.fromhex(digest)
            except ValueError:
                raise PrincipalsError(f"principal {name!r}: token_sha256 is not hex") from None
            if not isinstance(roles, list) or not roles:
                raise PrincipalsError(f"principal {name!r}: roles must be a non-empty list")
            try:
                role_set = frozenset(Role(r) for r in roles)
            except ValueError:
                raise PrincipalsError(
                    f"principal {name!r}: roles must be among {', '.join(r.value for r in Role)}"
                ) from None
            requires_grant = entry.get("requires_grant", False)
            if not isinstance(requires_grant, bool):
                # A typo ("yes", 1) must not quietly leave an executor able to resolve without one.
                raise PrincipalsError(f"principal {name!r}: requires_grant must be true or false")
            found.append(
                Principal(name, role_set, raw, _workspace_patterns(name, entry.get("workspaces")), requires_grant)
            )
        if not found:
            log.warning("the principals file lists no principals: every token is refused")
        return cls(found)

    @classmethod
    def load(cls, path: Path) -> Principals:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise PrincipalsError(f"principals file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise PrincipalsError(f"principals file {path} cannot be read as JSON: {type(exc).__name__}") from None
        return cls.from_json(data)

    def authenticate(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        match: Principal | None = None
        # No early exit: every hash is compared, whatever matches.
        for principal in self._principals:
            if hmac.compare_digest(digest, principal.token_sha256):
                match = principal
        return match


def _no_principals(exc: Exception) -> Principals:
    log.error("the principals file cannot be used: every token is refused until it loads again")
    return Principals(())


def principals_source(path: Path | None, principals: Principals) -> WatchedFile[Principals]:
    """The principals file, re-read within a second of a change, so that adding or revoking a
    token takes effect on every replica without a restart. Looked at at most once a second: the
    check sits on every call's path. A file that stops loading means no principals at all."""
    return WatchedFile(
        "principals", path, principals, Principals.load, (PrincipalsError,), interval=1.0, on_error=_no_principals
    )


# The caller of the RPC being served, set by the interceptor for the handler's task.
current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("current_caller")

# Which role each service needs; a method of a service not listed here is refused.
SERVICE_ROLES: dict[str, Role] = {
    "secrets.v1.SecretStore": Role.EDITOR,
    "secrets.v1.Resolver": Role.EXECUTOR,
    "secrets.v1.Directory": Role.DIRECTORY,
    "secrets.v1.Operations": Role.OPS,
}
# Methods whose role is not their service's.
METHOD_ROLES: dict[str, Role] = {
    "/secrets.v1.Resolver/IssueRunGrant": Role.ORCHESTRATOR,
    "/secrets.v1.Resolver/RevokeRunGrant": Role.ORCHESTRATOR,
    "/secrets.v1.Resolver/EndRun": Role.ORCHESTRATOR,
}


def role_for(method: str) -> Role | None:
    """The role a method (`/package.Service/Method`) needs; None for a method of an unknown service."""
    return METHOD_ROLES.get(method) or SERVICE_ROLES.get(method[1:].rpartition("/")[0])


# Probes and operators call these with no token (SPEC 3.6).
OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
USER_ID_HEADER = "x-user-id"


def _rejecting_handler(
    code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str | bytes], ...] = ()
) -> grpc.RpcMethodHandler[Any, Any]:
    async def reject(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message, trailing_metadata=trailing)

    # The request is never parsed: a caller we refuse gets no say in what we deserialize.
    return grpc.unary_unary_rpc_method_handler(reject)


def _field_violation(field: str, description: str) -> tuple[tuple[str, str | bytes], ...]:
    """The google.rpc.BadRequest trailer every INVALID_ARGUMENT of this service carries."""
    packed = any_pb2.Any()
    packed.Pack(
        error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)]
        )
    )
    status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=description, details=[packed])
    return tuple(rpc_status.to_status(status).trailing_metadata)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates every call and enforces the role of the service it targets.

    Centralised so that no RPC, present or future, can forget to check: a method of an unknown
    service is refused, not let through.
    """

    def __init__(self, principals: WatchedFile[Principals]) -> None:
        self._principals = principals

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = handler_call_details.method
        service = method[1:].rpartition("/")[0]
        if service in OPEN_SERVICES:
            return await continuation(handler_call_details)
        required = METHOD_ROLES.get(method) or SERVICE_ROLES.get(service)
        if required is None:
            return _rejecting_handler(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {method}")
        token = ""
        user_id = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                token = value
            elif key == USER_ID_HEADER and isinstance(value, str):
                user_id = value
        scheme, _, credential = token.partition(" ")
        if not token:
            return _rejecting_handler(grpc.StatusCode.UNAUTHENTICATED, "missing authorization: Bearer <token>")
        if scheme.lower() != "bearer" or not credential.strip():
            return _rejecting_handler(grpc.StatusCode.UNAUTHENTICATED, "authorization must be: Bearer <token>")
        principal = self._principals.current().authenticate(credential.strip())
        if principal is None:
            return _rejecting_handler(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        if required not in principal.roles:
            return _rejecting_handler(
                grpc.StatusCode.PERMISSION_DENIED,
                f"principal {principal.name!r} lacks role {required.value!r} needed for {method[1:]}",
            )
        if required is Role.EDITOR:
            # (HTTP/2 allows no leading or trailing whitespace in a header value; a blank one is
            # treated as missing.)
            user_id = user_id.strip()
            if not user_id:
                return _rejecting_handler(
                    grpc.StatusCode.UNAUTHENTICATED, f"editor calls need {USER_ID_HEADER}: <the user acted for>"
                )
            # The one rule for ids: the header names the same users as every user_id field.
            problem = id_problem(USER_ID_HEADER, user_id)
            if problem:
                return _rejecting_handler(
                    grpc.StatusCode.INVALID_ARGUMENT, problem, _field_violation(USER_ID_HEADER, problem)
                )
        # grpc.aio runs the interceptor and then the handler in one task per call, so the caller
        # set here is what the handler reads (and no other call can see it). Setting it here
        # rather than wrapping the handler keeps the hot path free of a per-call wrapper; if
        # grpc ever changed that, every servicer's `current_caller.get()` would fail loudly.
        current_caller.set(Caller(principal.name, user_id, principal.workspaces, principal.requires_grant))
        return await continuation(handler_call_details)

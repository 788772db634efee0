"""The one place where exceptions become gRPC statuses (SPEC 3.1).

Domain errors carry a human message that never holds a value; InvalidArgument adds a
google.rpc.BadRequest with one field violation per bad field. Anything unexpected becomes
INTERNAL with a reference id, and is logged by type and stack only: an unexpected exception's
message is not ours, so it is never logged or returned.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.api.registry import Held, Overloaded, Undecodable
from service.auth import current_caller
from service.crypto.aead import IntegrityError
from service.crypto.keyring import UnknownMasterKey
from service.domain import errors as e
from service.domain.policy import principal_may_use_workspace
from service.store.pool import CONNECTION_ERRORS, call_deadline

log = logging.getLogger(__name__)

# Serialization failures and deadlocks: the transaction was rolled back whole and can be retried.
_RETRYABLE_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,
)

_CODES: list[tuple[type[e.DomainError], grpc.StatusCode]] = [
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.RevisionConflict, grpc.StatusCode.ABORTED),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (e.DataLoss, grpc.StatusCode.DATA_LOSS),
]


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...] | None]:
    """The status code, message and trailing metadata (rich details) for an exception."""
    if isinstance(exc, e.DomainError):
        code = next(c for cls, c in _CODES if isinstance(exc, cls))
        details: list[any_pb2.Any] = []
        if isinstance(exc, e.InvalidArgument) and exc.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in exc.violations
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(bad)
            details.append(packed)
        if isinstance(exc, e.RevisionConflict):
            packed = any_pb2.Any()
            packed.Pack(
                error_details_pb2.ErrorInfo(
                    reason="REVISION_CONFLICT",
                    domain="secrets.v1",
                    metadata={"current_revision": str(exc.current), "expected_revision": str(exc.expected)},
                )
            )
            details.append(packed)
        if not details:
            return code, exc.message, None
        status = status_pb2.Status(code=code.value[0], message=exc.message, details=details)
        return code, exc.message, tuple(rpc_status.to_status(status).trailing_metadata)
    if isinstance(exc, IntegrityError):
        return grpc.StatusCode.DATA_LOSS, "a sealed value failed authentication", None
    # What the database says about a call is the caller's to retry or fix, never our INTERNAL.
    # The messages are ours: the database's own may quote the row it refused.
    if isinstance(exc, CONNECTION_ERRORS):
        return grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry shortly", None
    if isinstance(exc, _RETRYABLE_DB_ERRORS):
        return grpc.StatusCode.ABORTED, "the call conflicted with a concurrent change; retry it", None
    if isinstance(exc, asyncpg.UniqueViolationError):
        return grpc.StatusCode.ALREADY_EXISTS, "it already exists (a concurrent call created it)", None
    if isinstance(exc, asyncpg.QueryCanceledError):
        return grpc.StatusCode.UNAVAILABLE, "the database took too long; retry shortly", None
    if isinstance(exc, UnknownMasterKey):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc), None
    reference = uuid.uuid4().hex[:12]
    # Type and stack only: the message of an exception we did not raise is not ours to trust.
    log.error(
        "internal error %s: %s\n%s", reference, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__))
    )
    return grpc.StatusCode.INTERNAL, f"internal error (reference {reference})", None


def _require_workspace_scope(request: object) -> None:
    """A principal scoped to some workspaces is refused on any other, for every role and every
    RPC: here, where every call passes once its request is decoded, rather than in each use case
    that might forget. Calls that name no workspace (key status, rotation, the audit log of all
    workspaces) are for unscoped principals only."""
    who = current_caller.get(None)
    if who is None or who.workspaces is None:
        return
    workspace_id = getattr(request, "workspace_id", "")
    if not workspace_id and _names_workspace_by_grant(request):
        # The workspace is the grant's: service/api/resolver.py checks it against the scope
        # once the grant is verified (and refuses a request without a valid one).
        return
    if not principal_may_use_workspace(who.workspaces, workspace_id):
        where = f"workspace {workspace_id!r}" if workspace_id else "calls that name no workspace"
        raise e.PermissionDenied(f"principal {who.principal!r} is not scoped to {where}")


def _names_workspace_by_grant(request: object) -> bool:
    """A resolve with a run grant may leave workspace_id empty: the grant names the workspace."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", "")
    return full_name == "secrets.v1.ResolveInputsRequest" and bool(getattr(request, "grant", ""))


S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _deadline(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None


def rpc(
    method: Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]:
    """Wraps a servicer method so every exception leaves as the right status."""

    @functools.wraps(method)
    async def handle(self: S, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        token = call_deadline.set(_deadline(context))
        began = time.perf_counter()
        outcome = "OK"
        try:
            held = request
            if isinstance(request, Held):
                # `held` stays referenced until this call is done: its budget is given back then.
                request = request.message
            if isinstance(request, Overloaded):
                raise e.ResourceExhausted(
                    f"the server is holding as many request bytes as it may; retry shortly ({request.size} bytes refused)"
                )
            if isinstance(request, Undecodable):
                raise e.InvalidArgument(f"the request could not be decoded: {request.reason}")
            _require_workspace_scope(request)
            response = await method(self, request, context)
            del held
            return response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message, trailing = status_for(exc)
            outcome = code.name
            if trailing:
                await context.abort(code, message, trailing_metadata=trailing)
            await context.abort(code, message)
            raise  # unreachable: abort raises
        finally:
            call_deadline.reset(token)
            if log.isEnabledFor(logging.DEBUG):
                who = current_caller.get(None)
                log.debug(
                    "%s by %s for %r: %s in %.2f ms",
                    method.__name__,
                    who.principal if who else "?",
                    who.user_id if who else "",
                    outcome,
                    (time.perf_counter() - began) * 1000,
                )

    return handle

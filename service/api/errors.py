"""The one place where exceptions become gRPC statuses (SPEC 3.1).

Domain errors carry a human message that never holds a value; InvalidArgument adds a
google.rpc.BadRequest with one field violation per bad field. The store turns what the database
says into domain errors (service/store/pool.py), so nothing here knows the database. Anything
unexpected becomes INTERNAL with a reference id, and is logged by type and stack only: an
unexpected exception's message is not ours, so it is never logged or returned.

The registry (service/api/registry.py) applies `status_for` to every method of every service.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.crypto.aead import IntegrityError
from service.crypto.keyring import UnknownMasterKey
from service.domain import errors as e

log = logging.getLogger(__name__)

# A status travels in the call's trailers (grpc-message, grpc-status-details-bin), which a client
# takes up to 8 KiB (gRPC's default; past it at random, never past 16 KiB): a save of 1,000 bad
# changes, or the in-use guard on a delete of 100 secrets, once came to 25-90 KiB and reached the
# caller as RESOURCE_EXHAUSTED "Stream removed". What does not fit these bounds is left out, and
# said so: the message is cut, and the details keep their first violations and one more saying
# how many were not listed.
MAX_STATUS_MESSAGE_BYTES = 1024
MAX_VIOLATIONS_BYTES = 2048

_CODES: list[tuple[type[e.DomainError], grpc.StatusCode]] = [
    (e.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.RevisionConflict, grpc.StatusCode.ABORTED),
    (e.Aborted, grpc.StatusCode.ABORTED),
    (e.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (e.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (e.DataLoss, grpc.StatusCode.DATA_LOSS),
]


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...] | None]:
    """The status code, message and trailing metadata (rich details) for an exception."""
    if isinstance(exc, e.DomainError):
        code = next(c for cls, c in _CODES if isinstance(exc, cls))
        message = _fitted(exc.message)
        details: list[any_pb2.Any] = []
        if isinstance(exc, e.InvalidArgument) and exc.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=_fitting(
                    [
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in exc.violations
                    ],
                    lambda first, more: error_details_pb2.BadRequest.FieldViolation(
                        field=first.field, description=_not_listed(more)
                    ),
                )
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
        if isinstance(exc, e.FailedPrecondition) and exc.violations:
            packed = any_pb2.Any()
            packed.Pack(
                error_details_pb2.PreconditionFailure(
                    violations=_fitting(
                        [
                            error_details_pb2.PreconditionFailure.Violation(
                                type=v.type, subject=v.subject, description=v.description
                            )
                            for v in exc.violations
                        ],
                        lambda first, more: error_details_pb2.PreconditionFailure.Violation(
                            type=first.type, subject=first.subject, description=_not_listed(more)
                        ),
                    )
                )
            )
            details.append(packed)
        if not details:
            return code, message, None
        status = status_pb2.Status(code=code.value[0], message=message, details=details)
        return code, message, tuple(rpc_status.to_status(status).trailing_metadata)
    if isinstance(exc, IntegrityError):
        return grpc.StatusCode.DATA_LOSS, "a sealed value failed authentication", None
    if isinstance(exc, UnknownMasterKey):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc), None
    reference = uuid.uuid4().hex[:12]
    # Type and stack only: the message of an exception we did not raise is not ours to trust.
    log.error(
        "internal error %s: %s\n%s", reference, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__))
    )
    return grpc.StatusCode.INTERNAL, f"internal error (reference {reference})", None


V = TypeVar("V", error_details_pb2.BadRequest.FieldViolation, error_details_pb2.PreconditionFailure.Violation)


def _fitting(violations: list[V], summary: Callable[[V, int], V]) -> list[V]:
    """The first violations that fit in MAX_VIOLATIONS_BYTES, then, when some do not, one made by
    `summary` from the first left out and how many were."""
    used = 0
    kept: list[V] = []
    for violation in violations:
        used += violation.ByteSize() + 3  # its tag and length
        if used > MAX_VIOLATIONS_BYTES:
            return [*kept, summary(violation, len(violations) - len(kept))]
        kept.append(violation)
    return kept


def _not_listed(more: int) -> str:
    return f"and {more:,} more violation(s), not listed (a status must fit in the call's trailers)"


def _fitted(message: str) -> str:
    data = message.encode()
    if len(data) <= MAX_STATUS_MESSAGE_BYTES:
        return message
    kept = data[: MAX_STATUS_MESSAGE_BYTES - 64].decode("utf-8", "ignore")
    return f"{kept}... ({len(data) - len(kept.encode()):,} bytes more not shown)"

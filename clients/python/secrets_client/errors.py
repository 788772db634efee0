"""Typed exceptions for every status the service returns; one mapping from grpc errors."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class SecretsError(Exception):
    """A call to the secrets service failed. `code` is the gRPC status; `message` is the
    service's explanation (it never contains a secret value)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class Unauthenticated(SecretsError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SecretsError):
    code = grpc.StatusCode.PERMISSION_DENIED


class InvalidArgument(SecretsError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, violations: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        # (field, description) pairs from google.rpc.BadRequest, e.g. ("changes[2].key", "...").
        self.violations = violations or []


class NotFound(SecretsError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SecretsError):
    code = grpc.StatusCode.ALREADY_EXISTS


class RevisionConflict(SecretsError):
    """ABORTED: someone saved since the revision you sent. Reload, reapply, save again."""

    code = grpc.StatusCode.ABORTED

    def __init__(self, message: str, current_revision: int | None = None) -> None:
        super().__init__(message)
        self.current_revision = current_revision


class FailedPrecondition(SecretsError):
    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, violations: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        # (type, subject, description) from google.rpc.PreconditionFailure: the in-use guard's
        # ("SECRET_IN_USE", "workflows/<id>", ...) and ("PERSONAL_FALLBACK", "secrets/<key>", ...).
        self.violations = violations or []


class ResourceExhausted(SecretsError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SecretsError):
    """The service or its database is unavailable; retrying later is safe."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SecretsError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class DataLoss(SecretsError):
    """A sealed value failed authentication on the server: it was altered or moved."""

    code = grpc.StatusCode.DATA_LOSS


_BY_CODE: dict[grpc.StatusCode, type[SecretsError]] = {
    cls.code: cls
    for cls in (
        Unauthenticated,
        PermissionDenied,
        InvalidArgument,
        NotFound,
        AlreadyExists,
        RevisionConflict,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        DataLoss,
    )
}


def from_rpc_error(err: grpc.aio.AioRpcError) -> SecretsError:
    code = err.code()
    message = err.details() or code.name
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        found: list[tuple[str, str]] = []
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                found.extend((v.field, v.description) for v in bad.field_violations)
        return InvalidArgument(message, found)
    if code == grpc.StatusCode.ABORTED:
        current = None
        for detail in status.details if status else []:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and "current_revision" in info.metadata:
                current = int(info.metadata["current_revision"])
        return RevisionConflict(message, current)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        violations: list[tuple[str, str, str]] = []
        for detail in status.details if status else []:
            failure = error_details_pb2.PreconditionFailure()
            if detail.Unpack(failure):
                violations.extend((v.type, v.subject, v.description) for v in failure.violations)
        return FailedPrecondition(message, violations)
    cls = _BY_CODE.get(code)
    return cls(message) if cls else SecretsError(message, code)

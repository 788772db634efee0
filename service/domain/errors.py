"""Domain exceptions. One module (service/api/errors.py) maps them to gRPC status codes.

Messages are shown to callers, so they must never contain a secret value: they name keys,
fields, lines and indexes only.
"""

from __future__ import annotations

from dataclasses import dataclass


class DomainError(Exception):
    """Base of every error a caller is meant to see."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: where (e.g. "changes[3].key") and why."""

    field: str
    description: str


class InvalidArgument(DomainError):
    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []


class Unauthenticated(DomainError):
    pass


class PermissionDenied(DomainError):
    pass


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


@dataclass(frozen=True)
class PreconditionViolation:
    """One reason a change was refused (google.rpc.PreconditionFailure): its kind (`type`, e.g.
    SECRET_IN_USE), what it is about (`subject`, e.g. workflows/<id>) and why."""

    type: str
    subject: str
    description: str


class FailedPrecondition(DomainError):
    def __init__(self, message: str, violations: list[PreconditionViolation] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []


class ResourceExhausted(DomainError):
    pass


class RevisionConflict(DomainError):
    """Someone saved the scope since the editor last looked; nothing was written."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            f"the secrets were changed by someone else: expected revision {expected}, current revision "
            f"{current}; reload and save again"
        )
        self.expected = expected
        self.current = current


class Aborted(DomainError):
    """A concurrent change made the call fail as a whole; nothing was written, and it may be retried."""


class Unavailable(DomainError):
    """The database cannot be reached; the caller may retry."""


class DataLoss(DomainError):
    """A sealed value or wrapped key failed authentication: it was altered or moved."""

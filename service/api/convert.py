"""Protobuf <-> domain conversions shared by the servicers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from service.app.results import SecretSummary
from service.domain.errors import FieldViolation, InvalidArgument
from service.domain.model import Permission, Scope, SecretRole, Trigger
from service.gen.secrets.v1 import common_pb2 as common


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def scope(value: int, field: str = "scope") -> Scope:
    try:
        return Scope(value)
    except ValueError:
        raise InvalidArgument(
            f"{field} must be SCOPE_WORKSPACE or SCOPE_PERSONAL",
            [FieldViolation(field, "must be SCOPE_WORKSPACE or SCOPE_PERSONAL")],
        ) from None


def permission(value: int) -> Permission | None:
    try:
        return Permission(value)
    except ValueError:
        return None


def secret_role(value: int, field: str = "role") -> SecretRole:
    try:
        return SecretRole(value)
    except ValueError:
        raise InvalidArgument(
            f"{field} must be SECRET_ROLE_ADMIN or SECRET_ROLE_MEMBER",
            [FieldViolation(field, "must be SECRET_ROLE_ADMIN or SECRET_ROLE_MEMBER")],
        ) from None


def trigger(value: int) -> Trigger | None:
    try:
        return Trigger(value)
    except ValueError:
        return None


def summary(row: SecretSummary, shadowed: bool = False) -> common.SecretSummary:
    return common.SecretSummary(
        key=row.key,
        scope=int(row.scope),  # type: ignore[arg-type]
        display_name=row.display_name,
        description=row.description,
        version=row.version,
        updated_at=timestamp(row.updated_at),
        updated_by=row.updated_by,
        shadowed=shadowed,
        restricted=row.restricted,
        created_at=timestamp(row.created_at),
        created_by=row.created_by,
        last_used_at=optional_timestamp(row.last_used_at),
        expires_at=optional_timestamp(row.expires_at),
        expired=expired(row.expires_at),
    )


def optional_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    return timestamp(value) if value is not None else None


def expired(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at <= datetime.now(UTC)


# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def time_from(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    """A request's Timestamp as an aware datetime; INVALID_ARGUMENT outside Timestamp's range."""
    if not _MIN_SECONDS <= value.seconds <= _MAX_SECONDS or not 0 <= value.nanos < 1_000_000_000:
        problem = "must be a valid google.protobuf.Timestamp (years 1 to 9999, nanos 0 to 999999999)"
        raise InvalidArgument(f"{field} {problem}", [FieldViolation(field, problem)])
    return value.ToDatetime(tzinfo=UTC)


def duration_from(value: duration_pb2.Duration, field: str) -> timedelta | None:
    """A request's Duration (None when zero); INVALID_ARGUMENT when negative or past 100 years."""
    if value.seconds < 0 or value.nanos < 0:
        raise InvalidArgument(f"{field} must not be negative", [FieldViolation(field, "must not be negative")])
    if value.seconds > 100 * 366 * 86400 or value.nanos >= 1_000_000_000:
        raise InvalidArgument(f"{field} is too long", [FieldViolation(field, "must be at most 100 years")])
    if value.seconds == 0 and value.nanos == 0:
        return None
    return timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)

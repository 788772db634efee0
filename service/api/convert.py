"""Protobuf <-> domain conversions shared by the servicers."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

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
    )

"""Domain vocabulary shared by every layer: scopes, permissions, roles, triggers, tenants."""

from __future__ import annotations

import enum
from typing import NamedTuple


class Scope(enum.IntEnum):
    # Numbers match secrets.v1.Scope and the `scope` column, so no layer needs a lookup table.
    WORKSPACE = 1
    PERSONAL = 2


class Permission(enum.IntEnum):
    # Ordered: a higher permission includes every lower one. Matches secrets.v1.WorkspacePermission.
    READ = 1
    WRITE = 2
    ADMIN = 3


class SecretRole(enum.IntEnum):
    ADMIN = 1
    MEMBER = 2


class Trigger(enum.IntEnum):
    MANUAL = 1
    API = 2
    WEBHOOK = 3
    SCHEDULE = 4


class BlockErrorCode(enum.IntEnum):
    SECRET_NOT_FOUND = 1
    SECRET_NOT_PERMITTED = 2
    SECRET_EXPIRED = 3


class TenantKind(enum.StrEnum):
    """Who owns a data key: a workspace (its workspace secrets) or a user (their personal ones)."""

    WORKSPACE = "w"
    USER = "u"


class Tenant(NamedTuple):
    """A NamedTuple rather than a dataclass: it keys the data-key cache and the associated-data
    memo on every value a resolve opens, and tuple hashing is done in C."""

    kind: TenantKind
    id: str

    @staticmethod
    def for_scope(scope: Scope, owner_id: str) -> Tenant:
        kind = TenantKind.WORKSPACE if scope is Scope.WORKSPACE else TenantKind.USER
        return Tenant(kind, owner_id)

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}"

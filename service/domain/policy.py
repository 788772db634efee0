"""Who may do what (SPEC 2.2), as pure functions of the caller's permissions.

`permission` is the caller's workspace permission, or None when the caller is not a member of
the workspace. `role` is the caller's own role on one workspace secret, or None. Personal
secrets need no function: every personal-scope operation acts on the caller's own secrets, so
the owner may do everything and nobody else can even address them.
"""

from __future__ import annotations

from service.domain.errors import FailedPrecondition, PermissionDenied
from service.domain.model import Permission, SecretRole


def can_create_workspace_secret(permission: Permission | None) -> bool:
    return permission is not None and permission >= Permission.WRITE


# SPEC 2.2: workspace admins are implicit admins of every workspace secret. The store is handed
# this permission (it lists them among a secret's members) rather than restating the rule.
IMPLICIT_ADMIN_PERMISSION = Permission.ADMIN
# SPEC 2.2: the creator of a workspace secret becomes its admin.
CREATOR_ROLE = SecretRole.ADMIN


def is_implicit_admin(permission: Permission | None) -> bool:
    return permission is IMPLICIT_ADMIN_PERMISSION


def effective_role(permission: Permission | None, role: SecretRole | None) -> SecretRole | None:
    """A member's role on a workspace secret: their own, or ADMIN for an implicit admin."""
    if permission is None:
        return None
    return SecretRole.ADMIN if is_implicit_admin(permission) else role


def is_secret_admin(permission: Permission | None, role: SecretRole | None) -> bool:
    return effective_role(permission, role) is SecretRole.ADMIN


# Changing a value, renaming, deleting, editing details and managing members all need the same
# standing: workspace admin or the secret's own admin.
can_modify_workspace_secret = is_secret_admin
can_manage_secret_members = is_secret_admin


def can_use_workspace_secret(permission: Permission | None, restricted: bool, role: SecretRole | None) -> bool:
    """Whether a run whose run user has `permission` may use the secret."""
    if permission is None:
        return False
    if not restricted:
        return True
    return effective_role(permission, role) is not None


def principal_may_use_workspace(patterns: tuple[str, ...] | None, workspace_id: str) -> bool:
    """Whether a principal scoped to `patterns` (exact ids, or `prefix*`) may act on the
    workspace; None means unscoped (every workspace). An empty id (a call on no workspace, or on
    all of them) is for unscoped principals only."""
    if patterns is None:
        return True
    if not workspace_id:
        return False
    for pattern in patterns:
        if pattern.endswith("*"):
            if workspace_id.startswith(pattern[:-1]):
                return True
        elif workspace_id == pattern:
            return True
    return False


def require_member(permission: Permission | None, user_id: str, workspace_id: str) -> Permission:
    if permission is None:
        raise PermissionDenied(f"user {user_id!r} is not a member of workspace {workspace_id!r}")
    return permission


def require_create(permission: Permission | None, user_id: str, workspace_id: str, key: str) -> None:
    require_member(permission, user_id, workspace_id)
    if not can_create_workspace_secret(permission):
        raise PermissionDenied(
            f"creating workspace secret {key!r} needs WRITE or ADMIN permission in workspace {workspace_id!r}"
        )


def require_modify(
    permission: Permission | None, role: SecretRole | None, user_id: str, workspace_id: str, key: str, action: str
) -> None:
    require_member(permission, user_id, workspace_id)
    if not can_modify_workspace_secret(permission, role):
        raise PermissionDenied(
            f"{action} workspace secret {key!r} needs workspace ADMIN permission or the secret's own ADMIN role"
        )


def require_manage_members(permission: Permission | None, role: SecretRole | None, key: str) -> None:
    if not can_manage_secret_members(permission, role):
        raise PermissionDenied(
            f"managing members of {key!r} needs workspace ADMIN permission or the secret's own ADMIN role"
        )


def require_explain(permission: Permission | None, user_id: str, run_user_id: str, workspace_id: str) -> None:
    """ExplainReferences for a run of another user shows which personal secrets that user has, so
    it is for workspace admins (who debug automated runs) and the run user themself (SPEC 2.2)."""
    require_member(permission, user_id, workspace_id)
    if run_user_id != user_id and permission is not Permission.ADMIN:
        raise PermissionDenied(
            f"explaining a run of another user needs workspace ADMIN permission in workspace {workspace_id!r}"
        )


def require_may_take_role(permission: Permission | None, role: SecretRole | None, email: str) -> None:
    """Workspace admins are implicit admins of every workspace secret: they cannot be demoted to
    MEMBER or removed (role None) from one."""
    if is_implicit_admin(permission) and role is not SecretRole.ADMIN:
        change = "removed" if role is None else "demoted"
        raise FailedPrecondition(
            f"{email} is a workspace admin: an implicit admin of every workspace secret, who cannot be {change}"
        )

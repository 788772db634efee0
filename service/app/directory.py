"""Workspace membership, kept in sync by the platform (Directory)."""

from __future__ import annotations

import asyncpg

from service.app import listings
from service.app.audit import audit_record
from service.app.cache import workspace_tag
from service.app.changes import Changes
from service.app.context import Caller
from service.app.results import WorkspaceMember, member_of
from service.domain.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from service.domain.keys import require_email, require_id
from service.domain.model import Permission
from service.store import repository as repo
from service.store.pool import Database


class DirectoryService:
    def __init__(self, db: Database, changes: Changes) -> None:
        self._db = db
        self._changes = changes

    async def put_member(
        self, caller: Caller, workspace_id: str, user_id: str, email: str, permission: Permission | None, external: bool
    ) -> tuple[WorkspaceMember, bool]:
        require_id("workspace_id", workspace_id)
        require_id("user_id", user_id)
        email = require_email(email)
        if permission is None:
            raise InvalidArgument(
                "permission is required: WORKSPACE_PERMISSION_READ, _WRITE or _ADMIN",
                [FieldViolation("permission", "must be WORKSPACE_PERMISSION_READ, _WRITE or _ADMIN")],
            )
        async with self._changes.transaction(workspace_tag(workspace_id)) as conn:
            other = await repo.member_with_email(conn, workspace_id, email)
            if other is not None and other.user_id != user_id:
                raise AlreadyExists(f"email is already used by member {other.user_id!r} of this workspace")
            try:
                member, created = await repo.put_member(conn, workspace_id, user_id, email, permission, external)
            except asyncpg.UniqueViolationError:
                # Another call gave the same email to another member after the check above.
                raise AlreadyExists("email is already used by another member of this workspace") from None
            detail = f"permission {permission.name}{' (external)' if external else ''}"
            await repo.insert_audit(
                conn, audit_record(caller, workspace_id, "member.put", user_id=user_id, detail=detail)
            )
        return member_of(member), created

    async def remove_member(self, caller: Caller, workspace_id: str, user_id: str) -> tuple[bool, int]:
        """Removes a member and, in the same transaction, their memberships of the workspace's
        secrets. Their runs lose the workspace's secrets and their personal secrets' use here,
        since both need current membership."""
        require_id("workspace_id", workspace_id)
        require_id("user_id", user_id)
        async with self._changes.transaction(workspace_tag(workspace_id)) as conn:
            removed, roles = await repo.remove_member(conn, workspace_id, user_id)
            if not removed:
                raise NotFound(f"user {user_id!r} is not a member of workspace {workspace_id!r}")
            detail = f"{roles} secret membership(s) removed"
            await repo.insert_audit(
                conn, audit_record(caller, workspace_id, "member.remove", user_id=user_id, detail=detail)
            )
        return removed, roles

    async def list_members(
        self, workspace_id: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[WorkspaceMember], str]:
        """One page of the workspace's members, by user id, and the next page's token ('' at the end)."""
        page = await listings.members_page(self._db, workspace_id, page_size, page_token)
        return [member_of(m) for m in page.members], page.next_page_token

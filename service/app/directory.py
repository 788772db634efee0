"""Workspace membership, kept in sync by the platform (Directory)."""

from __future__ import annotations

from service.app.context import Caller
from service.app.editor import require_id
from service.domain.errors import AlreadyExists, InvalidArgument
from service.domain.keys import email_problem, normalize_email
from service.domain.model import Permission
from service.store import repository as repo
from service.store.db import Database


class DirectoryService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put_member(
        self, caller: Caller, workspace_id: str, user_id: str, email: str, permission: Permission | None, external: bool
    ) -> tuple[repo.MemberRow, bool]:
        require_id("workspace_id", workspace_id)
        require_id("user_id", user_id)
        email = normalize_email(email)
        problem = email_problem(email)
        if problem:
            raise InvalidArgument(problem)
        if permission is None:
            raise InvalidArgument("permission is required: WORKSPACE_PERMISSION_READ, _WRITE or _ADMIN")
        async with self._db.transaction() as conn:
            other = await repo.member_with_email(conn, workspace_id, email)
            if other is not None and other.user_id != user_id:
                raise AlreadyExists(f"email is already used by member {other.user_id!r} of this workspace")
            member, created = await repo.put_member(conn, workspace_id, user_id, email, permission, external)
            await repo.insert_audit(
                conn,
                repo.AuditRecord(
                    principal=caller.principal,
                    user_id=user_id,
                    workspace_id=workspace_id,
                    action="member.put",
                    outcome="ok",
                    detail=f"permission {permission.name}{' (external)' if external else ''}",
                ),
            )
        return member, created

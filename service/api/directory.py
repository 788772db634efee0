"""secrets.v1.Directory: the platform keeps workspace membership in sync."""

from __future__ import annotations

from typing import Any

import grpc

from service.api import convert
from service.api.common import caller
from service.app.directory import DirectoryService
from service.app.results import WorkspaceMember
from service.gen.secrets.v1 import directory_pb2 as pb
from service.gen.secrets.v1 import directory_pb2_grpc as pb_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


def member_to_proto(m: WorkspaceMember) -> pb.WorkspaceMember:
    return pb.WorkspaceMember(
        workspace_id=m.workspace_id,
        user_id=m.user_id,
        email=m.email,
        permission=int(m.permission),  # type: ignore[arg-type]
        external=m.external,
        updated_at=convert.timestamp(m.updated_at),
    )


class DirectoryServicer(pb_grpc.DirectoryServicer):
    def __init__(self, directory: DirectoryService) -> None:
        self._directory = directory

    async def PutWorkspaceMember(
        self, request: pb.PutWorkspaceMemberRequest, context: Ctx
    ) -> pb.PutWorkspaceMemberResponse:
        member, created = await self._directory.put_member(
            caller(),
            request.workspace_id,
            request.user_id,
            request.email,
            convert.permission(request.permission),
            request.external,
        )
        return pb.PutWorkspaceMemberResponse(member=member_to_proto(member), created=created)

    async def RemoveWorkspaceMember(
        self, request: pb.RemoveWorkspaceMemberRequest, context: Ctx
    ) -> pb.RemoveWorkspaceMemberResponse:
        removed, roles = await self._directory.remove_member(caller(), request.workspace_id, request.user_id)
        return pb.RemoveWorkspaceMemberResponse(removed=removed, secret_memberships_removed=roles)

    async def ListWorkspaceMembers(
        self, request: pb.ListWorkspaceMembersRequest, context: Ctx
    ) -> pb.ListWorkspaceMembersResponse:
        members, token = await self._directory.list_members(request.workspace_id, request.page_size, request.page_token)
        return pb.ListWorkspaceMembersResponse(members=[member_to_proto(m) for m in members], next_page_token=token)

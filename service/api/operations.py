"""secrets.v1.Operations: master keys and the audit log, for operators."""

from __future__ import annotations

from typing import Any

import grpc

from service.api.common import unimplemented
from service.gen.secrets.v1 import operations_pb2 as pb
from service.gen.secrets.v1 import operations_pb2_grpc as pb_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


class OperationsServicer(pb_grpc.OperationsServicer):
    async def GetKeyStatus(self, request: pb.GetKeyStatusRequest, context: Ctx) -> pb.GetKeyStatusResponse:
        return await unimplemented(context, "GetKeyStatus")  # type: ignore[no-any-return]

    async def RotateKeys(self, request: pb.RotateKeysRequest, context: Ctx) -> pb.RotateKeysResponse:
        return await unimplemented(context, "RotateKeys")  # type: ignore[no-any-return]

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, context: Ctx) -> pb.ListAuditEventsResponse:
        return await unimplemented(context, "ListAuditEvents")  # type: ignore[no-any-return]

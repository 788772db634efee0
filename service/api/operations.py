"""secrets.v1.Operations: master keys, data-key rotation and the audit log, for operators."""

from __future__ import annotations

from typing import Any

import grpc

from service.api import convert
from service.api.common import caller
from service.app.operations import OperationsService
from service.gen.secrets.v1 import operations_pb2 as pb
from service.gen.secrets.v1 import operations_pb2_grpc as pb_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


class OperationsServicer(pb_grpc.OperationsServicer):
    def __init__(self, operations: OperationsService) -> None:
        self._ops = operations

    async def GetKeyStatus(self, request: pb.GetKeyStatusRequest, context: Ctx) -> pb.GetKeyStatusResponse:
        status = await self._ops.key_status()
        return pb.GetKeyStatusResponse(
            primary_key_id=status.primary,
            keys=[
                pb.MasterKeyStatus(key_id=i, primary=i == status.primary, wrapped_data_keys=n, in_keyring=held)
                for i, n, held in status.keys
            ],
        )

    async def RotateKeys(self, request: pb.RotateKeysRequest, context: Ctx) -> pb.RotateKeysResponse:
        result = await self._ops.rotate(caller())
        return pb.RotateKeysResponse(
            primary_key_id=result.primary, rewrapped=result.rewrapped, already_current=result.already_current
        )

    async def RotateDataKeys(self, request: pb.RotateDataKeysRequest, context: Ctx) -> pb.RotateDataKeysResponse:
        result = await self._ops.rotate_data_keys(caller(), request.workspace_id, request.user_id)
        return pb.RotateDataKeysResponse(
            workspace_id=request.workspace_id,
            user_id=request.user_id,
            old_generation=result.old_generation,
            new_generation=result.new_generation,
            resealed=result.resealed,
        )

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, context: Ctx) -> pb.ListAuditEventsResponse:
        rows, token = await self._ops.audit_events(request.workspace_id, request.page_size, request.page_token)
        return pb.ListAuditEventsResponse(
            events=[
                pb.AuditEvent(
                    id=r.id,
                    time=convert.timestamp(r.at),
                    principal=r.record.principal,
                    user_id=r.record.user_id,
                    workspace_id=r.record.workspace_id,
                    action=r.record.action,
                    keys=[pb.AuditKey(key=k, scope=s, version=v) for k, s, v in r.record.keys],  # type: ignore[arg-type]
                    execution_id=r.record.execution_id,
                    outcome=r.record.outcome,
                    detail=r.record.detail,
                )
                for r in rows
            ],
            next_page_token=token,
        )

"""secrets.v1.Operations: master keys, data-key rotation and the audit log, for operators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from service.api import convert
from service.api.common import caller
from service.app.operations import OperationsService
from service.domain.audit_filter import AuditFilter
from service.domain.errors import FieldViolation, InvalidArgument
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
        where = AuditFilter(
            workspace_id=request.workspace_id,
            principal=request.principal,
            user_id=request.user_id,
            key=request.key,
            action=request.action,
            start=_time(request, "start_time"),
            end=_time(request, "end_time"),
        )
        page = await self._ops.audit_events(where, request.page_size, request.page_token)
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
                    trigger=r.record.trigger,  # type: ignore[arg-type]
                    workflow_id=r.record.workflow_id,
                    failed_keys=[pb.AuditFailedKey(key=k, code=c) for k, c in r.record.failed_keys],  # type: ignore[arg-type]
                    count=r.record.count,
                    last_time=convert.timestamp(r.record.last_at) if r.record.last_at is not None else None,
                )
                for r in page.events
            ],
            next_page_token=page.next_page_token,
        )


# The range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def _time(request: pb.ListAuditEventsRequest, field: str) -> datetime | None:
    """The time filter `field`, None when unset; INVALID_ARGUMENT (naming it) outside Timestamp's range."""
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    ts = getattr(request, field)
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(f"{field} is not a valid time", [FieldViolation(field, "is not a valid time")])
    return datetime.fromtimestamp(0, UTC) + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)

"""UpdateSecretDetails.expires_at at the very ends of google.protobuf.Timestamp's range.

Postgres stores 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z as ordinary instants, but
asyncpg reads exactly those two back as -infinity / infinity: naive datetime.min / datetime.max.
An admin who set either one got INTERNAL, and so did every later ListSecrets, GetSecret and
ListReferenceable of the workspace (comparing a naive time with an aware one), and every resolve
of the key (the -infinity one): one request broke the workspace's listings for every member until
the expiry was changed. Those two instants are now INVALID_ARGUMENT naming expires_at, and the
instants next to them are kept and shown as sent."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, Api, W, set_, uid
from tests.conftest import metadata

FIRST = -62_135_596_800  # 0001-01-01T00:00:00Z
LAST = 253_402_300_799  # 9999-12-31T23:59:59Z


def field_violations(err: grpc.aio.AioRpcError) -> list[str]:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [v.field for v in bad.field_violations]
    return []


async def everything_still_answers(api: Api, ws: str, user: str) -> None:
    md = metadata("editor", user)
    await api.store.ListSecrets(spb.ListSecretsRequest(workspace_id=ws), metadata=md)
    await api.store.GetSecret(spb.GetSecretRequest(workspace_id=ws, scope=W, key="KEY"), metadata=md)
    await api.store.ListReferenceable(spb.ListReferenceableRequest(workspace_id=ws), metadata=md)
    reply = await api.resolve(ws, {"b": {"a": "{{KEY}}"}}, user=user)
    assert reply.blocks[0].HasField("error") or reply.blocks[0].inputs.fields["a"].string_value == "value-1"


@pytest.mark.parametrize(("seconds", "nanos"), [(FIRST, 0), (LAST, 999_999_999), (LAST, 999_999_000)])
async def test_expires_at_at_the_ends_of_the_timestamp_range_is_invalid_argument(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture, seconds: int, nanos: int
) -> None:
    caplog.set_level(logging.ERROR, logger="service")
    api = Api(channel)
    ws, admin = uid("ws"), uid("admin")
    await api.member(ws, admin, ADMIN)
    await api.save(ws, admin, W, set_("KEY", "value-1"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.store.UpdateSecretDetails(
            spb.UpdateSecretDetailsRequest(
                workspace_id=ws,
                scope=W,
                key="KEY",
                expires_at=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
            ),
            metadata=metadata("editor", admin),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert field_violations(err.value) == ["expires_at"]
    await everything_still_answers(api, ws, admin)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("seconds", "nanos"), [(FIRST, 1000), (LAST, 999_998_000)])
async def test_expires_at_next_to_the_ends_is_kept_as_sent(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture, seconds: int, nanos: int
) -> None:
    caplog.set_level(logging.ERROR, logger="service")
    api = Api(channel)
    ws, admin = uid("ws"), uid("admin")
    await api.member(ws, admin, ADMIN)
    await api.save(ws, admin, W, set_("KEY", "value-1"))
    reply = await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(
            workspace_id=ws, scope=W, key="KEY", expires_at=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
        ),
        metadata=metadata("editor", admin),
    )
    assert (reply.secret.summary.expires_at.seconds, reply.secret.summary.expires_at.nanos) == (seconds, nanos)
    assert reply.secret.summary.expired == (seconds == FIRST)
    await everything_still_answers(api, ws, admin)
    resolved = await api.resolve(ws, {"b": {"a": "{{KEY}}"}}, user=admin)
    expired = resolved.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_EXPIRED
    assert expired == (seconds == FIRST)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

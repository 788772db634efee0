"""A refusal's status travels in gRPC trailers (grpc-message, grpc-status-details-bin), which a
client accepts up to 8 KiB (past it at random) and never past 16 KiB. service/api/errors.py put
every violation in them: a save of 1,000 bad changes (one google.rpc.BadRequest violation each),
or a delete of 100 secrets that workflows use (the in-use guard's message names every key, its
PreconditionFailure every workflow), made trailers of 25-90 KiB, and the editor got
RESOURCE_EXHAUSTED "Stream removed" with no details instead of INVALID_ARGUMENT or
FAILED_PRECONDITION. The status now lists what fits (the first violations, then one saying how
many more there are) and cuts an overlong message, so the refusal arrives whole."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, Api, W, delete, set_, uid
from tests.conftest import metadata


def details_of(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no rich status: {err.code()} {err.details()}")


def bad_request(err: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest:
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in details_of(err).details)
    return bad


async def refusal(awaitable: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable  # type: ignore[misc]
    return err.value


async def test_a_save_of_a_thousand_bad_changes_is_invalid_argument_with_its_first_violations(
    channel: grpc.aio.Channel,
) -> None:
    api = Api(channel)
    ws, admin = uid("ws"), uid("admin")
    await api.member(ws, admin, ADMIN)
    batches = [
        [set_(f"bad key {i}", "v") for i in range(1000)],
        [set_("DUP", "v") for _ in range(1000)],
        [spb.SecretChange(key="K" * 300 + str(i), rename_to="\x00" * 300) for i in range(200)],
    ]
    for changes in batches:
        err = await refusal(
            api.store.SaveSecrets(
                spb.SaveSecretsRequest(workspace_id=ws, scope=W, expected_revision=0, changes=changes),
                metadata=metadata("editor", admin),
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        violations = bad_request(err).field_violations
        assert 1 < len(violations) < len(changes)
        assert violations[0].field.startswith("changes[")
        assert "more" in violations[-1].description
        assert len(err.details() or "") <= 1024


async def test_deleting_a_hundred_secrets_in_use_is_failed_precondition(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, admin = uid("ws"), uid("admin")
    await api.member(ws, admin, ADMIN)
    keys = [f"K{i:03d}_" + "A" * 200 for i in range(100)]
    await api.save(ws, admin, W, *[set_(k, "value") for k in keys])
    await api.resolve(ws, {"b": {f"f{i}": "{{" + k + "}}" for i, k in enumerate(keys)}}, user=admin)
    for _ in range(100):  # usage is recorded within about 50 ms of the resolve
        got = await api.store.GetSecret(
            spb.GetSecretRequest(workspace_id=ws, scope=W, key=keys[-1]), metadata=metadata("editor", admin)
        )
        if got.secret.usage:
            break
        await asyncio.sleep(0.05)
    request = spb.SaveSecretsRequest(workspace_id=ws, scope=W, expected_revision=1, changes=[delete(k) for k in keys])
    err = await refusal(api.store.SaveSecrets(request, metadata=metadata("editor", admin)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    assert len(err.details() or "") <= 1024
    failure = error_details_pb2.PreconditionFailure()
    assert any(d.Unpack(failure) for d in details_of(err).details)
    assert 1 < len(failure.violations) < len(keys)
    assert "more" in failure.violations[-1].description

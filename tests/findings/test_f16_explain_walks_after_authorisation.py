"""Finding 16 (part): ExplainReferences walked its inputs before checking membership.

The walk is the costly part of the call; a caller who may not ask must not be able to spend it.
"""

from __future__ import annotations

import grpc
import pytest

from service.api import secret_store
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, Api, status_of, struct, uid
from tests.conftest import metadata


async def test_f16_a_non_member_is_refused_before_the_inputs_are_walked(
    channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = Api(channel)
    ws, admin, outsider = uid("ws"), uid("admin"), uid("outsider")
    await api.member(ws, admin, ADMIN)
    walked: list[int] = []
    real = secret_store.sites_in_blocks

    def spy(blocks):  # type: ignore[no-untyped-def]
        walked.append(len(blocks))
        return real(blocks)

    monkeypatch.setattr(secret_store, "sites_in_blocks", spy)
    request = spb.ExplainReferencesRequest(
        workspace_id=ws,
        trigger=common.TRIGGER_MANUAL,
        blocks=[common.BlockInputs(block_id="b", inputs=struct({"v": "{{K}}"}))],
    )
    err = await status_of(api.store.ExplainReferences(request, metadata=metadata("editor", outsider)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert walked == []
    await api.store.ExplainReferences(request, metadata=metadata("editor", admin))
    assert walked == [1]

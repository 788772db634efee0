"""Finding 16 (part), the editor's side: a small request must not make the server build a huge
response. ExplainReferences returns a field path per reference, and a path repeats every name
above it: about 1 MB of nested inputs with 2,000 references at the bottom meant 1.8 GB of paths.
The response is now sized before any path is built, and refused in the service's own words.
"""

from __future__ import annotations

import grpc

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, Api, status_of, struct, uid
from tests.conftest import metadata


async def test_f16_explaining_deep_long_paths_is_refused_before_they_are_built(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, admin = uid("ws"), uid("admin")
    await api.member(ws, admin, ADMIN)
    leaf: dict[str, object] = {f"f{i}": "{{K}}" for i in range(2000)}
    inputs: dict[str, object] = leaf
    for level in range(30):
        inputs = {f"n{level}-" + "x" * 30_000: inputs}
    request = spb.ExplainReferencesRequest(
        workspace_id=ws,
        trigger=common.TRIGGER_MANUAL,
        blocks=[common.BlockInputs(block_id="b", inputs=struct(inputs))],
    )
    err = await status_of(api.store.ExplainReferences(request, metadata=metadata("editor", admin)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "explanation would be larger" in (err.details() or "")
    # An ordinary request still works.
    small = spb.ExplainReferencesRequest(
        workspace_id=ws,
        trigger=common.TRIGGER_MANUAL,
        blocks=[common.BlockInputs(block_id="b", inputs=struct({"a": {"b": "{{K}}"}}))],
    )
    reply = await api.store.ExplainReferences(small, metadata=metadata("editor", admin))
    assert [r.field_path for r in reply.references] == ["a.b"]

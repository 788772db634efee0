"""Attack: an import that is written but answered as failed.

ImportDotenv commits its changes and then builds its report. Nothing bounded the report: a key
repeated on a million lines (`D=1` x 1,040,000, a 4.16 MB request) got one entry whose note
listed every overridden line, an 8.2 MB response that gRPC refused to send
(`RESOURCE_EXHAUSTED: Sent message larger than max (8248922 vs. 4194304)`) after the secret had
been created and the revision bumped; 20,000 keys of 206 characters did the same with a 4.3 MB
report. The editor is told the import failed when it did not (a retry then meets ABORTED).

Now the note names at most a few overridden lines and counts the rest, and an import whose report
would still not fit in a response is refused before anything is written.
"""

from __future__ import annotations

import grpc
import pytest

from service.domain.limits import MAX_MESSAGE_BYTES
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, Api, W, uid
from tests.conftest import metadata


async def _import(api: Api, ws: str, user: str, content: str, dry_run: bool) -> spb.ImportDotenvResponse:
    return await api.store.ImportDotenv(
        spb.ImportDotenvRequest(
            workspace_id=ws,
            scope=W,
            content=content,
            dry_run=dry_run,
            expected_revision=await api.revision(ws, user, W),
        ),
        metadata=metadata("editor", user),
        timeout=60,
    )


@pytest.mark.parametrize("dry_run", [True, False])
async def test_a_key_repeated_a_million_times_is_reported_in_a_response_that_fits(
    channel: grpc.aio.Channel, dry_run: bool
) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    reply = await _import(api, ws, user, "D=1\n" * 1_040_000, dry_run)
    assert reply.ByteSize() < 64 * 1024
    [entry] = reply.entries
    assert (entry.key, entry.line) == ("D", 1_040_000)
    assert entry.note.startswith("overrides lines 1, 2, 3") and "1,039,9" in entry.note
    assert await api.revision(ws, user, W) == (0 if dry_run else 1)


async def test_an_import_whose_report_cannot_fit_changes_nothing(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    content = "".join(f"K{'y' * 200}{i:05d}=v\n" for i in range(20_000))
    try:
        reply = await _import(api, ws, user, content, dry_run=False)
    except grpc.aio.AioRpcError as err:
        # Refused: then in the service's own words, and with nothing written.
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" not in (err.details() or "")
        assert await api.revision(ws, user, W) == 0
        assert not (await api.list(ws, user)).workspace_secrets
    else:
        assert reply.ByteSize() <= MAX_MESSAGE_BYTES and len(reply.entries) == 20_000

"""Finding 7: a removed member kept resolving for 30 s on another replica when an id held a comma.

Cache invalidations went out as comma-joined tags and were split on `,`, so removing a member of
workspace `a,b` invalidated the tags `w:a` and `b`. The payload is now a JSON array.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from service.config import Settings
from service.gen.secrets.v1 import directory_pb2 as dpb
from service.server import start
from service.store.notify import decode_tags, encode_tags
from tests.api import ADMIN, Api, W, set_, to_dict, uid
from tests.conftest import metadata


def test_f07_tags_with_separators_survive_the_notification_payload() -> None:
    tags = ["w:a,b", 'u:x"y', "u:\\,", "w:plain"]
    assert sorted(decode_tags(encode_tags(tags)) or []) == sorted(tags)
    assert decode_tags("w:a,b") is None  # not ours: the listener clears the cache instead


async def test_f07_a_member_removed_from_a_workspace_with_a_comma_stops_resolving_on_other_replicas(
    database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, keyring, principals = secrets_files
    instances = [
        await start(
            Settings(
                listen="127.0.0.1:0",
                database_url=database_url,
                data_dir=tmp_path / name,
                keyring_file=keyring,
                principals_file=principals,
            )
        )
        for name in ("a", "b")
    ]
    a, b = instances
    try:
        for _ in range(100):
            if a.cache.enabled and b.cache.enabled:
                break
            await asyncio.sleep(0.05)
        assert b.cache.enabled
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as ca,
            grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as cb,
        ):
            via_a, via_b = Api(ca), Api(cb)
            ws, user = uid("ws") + ",b", uid("user")
            await via_a.member(ws, user, ADMIN)
            await via_a.save(ws, user, W, set_("K", "value"))
            for _ in range(3):
                reply = await via_b.resolve(ws, {"blk": {"v": "{{K}}"}}, user=user)
                assert to_dict(reply.blocks[0].inputs) == {"v": "value"}
            assert b.cache.hits >= 2
            await via_a.directory.RemoveWorkspaceMember(
                dpb.RemoveWorkspaceMemberRequest(workspace_id=ws, user_id=user), metadata=metadata("directory")
            )
            # Notifications cross replicas in well under a second; the cache's TTL is 30 s.
            for _ in range(40):
                reply = await via_b.resolve(ws, {"blk": {"v": "{{K}}"}}, user=user)
                if reply.blocks[0].HasField("error"):
                    break
                await asyncio.sleep(0.05)
            assert reply.blocks[0].HasField("error"), "the removed member still resolves on the other replica"
    finally:
        for instance in instances:
            await instance.stop(grace=1)

"""One snapshot per run (issue 14, part 3): every resolve of one execution sees the versions its
first resolve of each key used, on every replica, until the run ends; a deleted secret or a
version no longer kept still fails its block; `latest_values` opts out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from service.app.pins import RunPins
from service.auth import hash_token
from service.config import Settings
from service.crypto.keyring import write_private_json
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.server import Running, start
from tests.api import ADMIN, Api, P, W, delete, set_, struct, to_dict, uid
from tests.conftest import TOKENS, metadata

ORCHESTRATOR = "pins-orchestrator-token"


def pins_of(running: Running) -> RunPins:
    (follower,) = [f for f in running.invalidations.followers if isinstance(f, RunPins)]
    return follower


@pytest.fixture
async def apis(
    database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path
) -> AsyncIterator[tuple[Api, Api]]:
    """Two server instances on one database, with an orchestrator principal."""
    _, keyring, _ = secrets_files
    principals = tmp_path / "principals.json"
    roles = {"editor": ["editor"], "executor": ["executor"], "directory": ["directory"], "ops": ["ops"]}
    entries: list[dict[str, Any]] = [
        {"name": f"test-{name}", "roles": r, "token_sha256": hash_token(TOKENS[name])} for name, r in roles.items()
    ]
    entries.append({"name": "orchestrator", "roles": ["orchestrator"], "token_sha256": hash_token(ORCHESTRATOR)})
    write_private_json(principals, {"principals": entries})
    instances: list[Running] = []
    try:
        for name in ("a", "b"):
            settings = Settings(
                listen="127.0.0.1:0",
                database_url=database_url,
                data_dir=tmp_path / name,
                keyring_file=keyring,
                principals_file=principals,
            )
            instances.append(await start(settings))
        for _ in range(100):
            if all(pins_of(i).ready for i in instances):
                break
            await asyncio.sleep(0.05)
        assert all(pins_of(i).ready for i in instances)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{instances[0].port}") as ca,
            grpc.aio.insecure_channel(f"127.0.0.1:{instances[1].port}") as cb,
        ):
            yield Api(ca), Api(cb)
    finally:
        for instance in instances:
            await instance.stop(grace=1)


async def resolve(
    api: Api, ws: str, user: str, execution: str, inputs: dict[str, Any], **fields: Any
) -> rpb.ResolveInputsResponse:
    request = rpb.ResolveInputsRequest(
        workspace_id=ws,
        workflow_id="wf",
        execution_id=execution,
        trigger=common.TRIGGER_MANUAL,
        triggering_user_id=user,
        blocks=[common.BlockInputs(block_id="b", inputs=struct(inputs))],
        **fields,
    )
    return await api.resolver.ResolveInputs(request, metadata=metadata("executor"))


async def values(api: Api, ws: str, user: str, execution: str, inputs: dict[str, Any], **fields: Any) -> Any:
    reply = await resolve(api, ws, user, execution, inputs, **fields)
    assert not reply.blocks[0].HasField("error"), reply.blocks[0].error
    return to_dict(reply.blocks[0].inputs)


async def seeded(api: Api) -> tuple[str, str]:
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("TOKEN", "token-v1"), set_("URL", "url-v1"))
    return ws, user


async def test_a_secret_changed_between_two_blocks_of_a_run_resolves_to_the_pinned_version(
    apis: tuple[Api, Api],
) -> None:
    a, b = apis
    ws, user = await seeded(a)
    run = uid("exec")
    first = await resolve(a, ws, user, run, {"t": "{{TOKEN}}"})
    assert to_dict(first.blocks[0].inputs) == {"t": "token-v1"}
    await a.save(ws, user, W, set_("TOKEN", "token-v2"), set_("URL", "url-v2"))
    # The next block of the same run, on this replica and on the other one: the pinned version.
    for api in (a, b):
        second = await resolve(api, ws, user, run, {"t": "{{TOKEN}}"})
        assert to_dict(second.blocks[0].inputs) == {"t": "token-v1"}
        assert second.blocks[0].references[0].version == 1
    # A key first used later in the run is pinned then (its newest version), and holds after.
    assert await values(b, ws, user, run, {"u": "{{URL}}", "t": "{{TOKEN}}"}) == {"u": "url-v2", "t": "token-v1"}
    await a.save(ws, user, W, set_("URL", "url-v3"))
    assert await values(a, ws, user, run, {"u": "{{URL}}"}) == {"u": "url-v2"}
    # Another run gets the newest values; so does a request that opts out, and it pins nothing.
    assert await values(b, ws, user, uid("exec"), {"t": "{{TOKEN}}", "u": "{{URL}}"}) == {
        "t": "token-v2",
        "u": "url-v3",
    }
    fresh = uid("exec")
    assert await values(a, ws, user, fresh, {"t": "{{TOKEN}}"}, latest_values=True) == {"t": "token-v2"}
    assert await values(a, ws, user, run, {"t": "{{TOKEN}}"}, latest_values=True) == {"t": "token-v2"}
    await a.save(ws, user, W, set_("TOKEN", "token-v3"))
    assert await values(b, ws, user, fresh, {"t": "{{TOKEN}}"}) == {"t": "token-v3"}
    # The pins hold no value, only ids and versions.
    assert await values(a, ws, user, run, {"t": "{{TOKEN}}"}) == {"t": "token-v1"}


async def test_a_deleted_or_no_longer_kept_pinned_secret_fails_its_block(apis: tuple[Api, Api]) -> None:
    a, b = apis
    ws, user = await seeded(a)
    await a.save(ws, user, P, set_("TOKEN", "personal-token"))
    run = uid("exec")
    assert await values(a, ws, user, run, {"t": "{{TOKEN}}", "u": "{{URL}}"}) == {
        "t": "token-v1",
        "u": "url-v1",
    }
    # Deleted since: the block fails (no falling back to the personal secret of the same key).
    await a.save(ws, user, W, delete("TOKEN"), acknowledge_in_use=True)  # resolved: the in-use guard
    for api in (a, b):
        reply = await resolve(api, ws, user, run, {"t": "{{TOKEN}}"})
        error = reply.blocks[0].error
        assert error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND and error.key == "TOKEN"
        assert "deleted" in error.message
    # Re-created under the same key: another secret, still not the pinned one.
    await a.save(ws, user, W, set_("TOKEN", "token-again"))
    reply = await resolve(b, ws, user, run, {"t": "{{TOKEN}}"})
    assert reply.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND
    # Changed past the kept versions: the pinned version 1 is gone.
    for i in range(2, 13):
        await a.save(ws, user, W, set_("URL", f"url-v{i}"))
    reply = await resolve(b, ws, user, run, {"u": "{{URL}}"})
    error = reply.blocks[0].error
    assert error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND
    assert "version 1" in error.message and "no longer kept" in error.message


async def test_end_run_drops_the_pins_on_every_replica(apis: tuple[Api, Api]) -> None:
    a, b = apis
    ws, user = await seeded(a)
    run = uid("exec")
    for api in (a, b):
        assert await values(api, ws, user, run, {"t": "{{TOKEN}}"}) == {"t": "token-v1"}
    await a.save(ws, user, W, set_("TOKEN", "token-v2"))
    ended = await a.resolver.EndRun(
        rpb.EndRunRequest(workspace_id=ws, execution_id=run),
        metadata=[("authorization", f"Bearer {ORCHESTRATOR}")],
    )
    assert ended.grants_ended == 0
    assert await values(a, ws, user, run, {"t": "{{TOKEN}}"}) == {"t": "token-v2"}
    # The other replica dropped its pins when the notification arrived.
    for _ in range(100):
        if (await values(b, ws, user, run, {"t": "{{TOKEN}}"})) == {"t": "token-v2"}:
            break
        await asyncio.sleep(0.01)
    assert await values(b, ws, user, run, {"t": "{{TOKEN}}"}) == {"t": "token-v2"}


async def test_a_run_grant_pins_its_execution(apis: tuple[Api, Api]) -> None:
    a, b = apis
    ws, user = await seeded(a)
    run = uid("exec")
    issued = await a.resolver.IssueRunGrant(
        rpb.IssueRunGrantRequest(
            workspace_id=ws,
            workflow_id="wf",
            execution_id=run,
            trigger=common.TRIGGER_MANUAL,
            triggering_user_id=user,
        ),
        metadata=[("authorization", f"Bearer {ORCHESTRATOR}")],
    )

    async def with_grant(api: Api) -> Any:
        request = rpb.ResolveInputsRequest(
            grant=issued.grant, blocks=[common.BlockInputs(block_id="b", inputs=struct({"t": "{{TOKEN}}"}))]
        )
        return to_dict((await api.resolver.ResolveInputs(request, metadata=metadata("executor"))).blocks[0].inputs)

    assert await with_grant(a) == {"t": "token-v1"}
    await a.save(ws, user, W, set_("TOKEN", "token-v2"))
    assert await with_grant(b) == {"t": "token-v1"}
    # The grant's execution is the run: a plain resolve naming it sees the same pins.
    assert await values(a, ws, user, run, {"t": "{{TOKEN}}"}) == {"t": "token-v1"}

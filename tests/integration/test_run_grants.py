"""Run grants (issue 14, part 2): an executor marked `requires_grant` resolves only with a grant
the orchestrator issued, and only for that grant's run: workspace, run user, trigger, workflow,
execution and keys; never after it expired, was revoked or its run ended (on every replica)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from service.app.grants import StoppedGrants
from service.auth import Principals, PrincipalsError, hash_token
from service.config import Settings
from service.crypto.keyring import write_private_json
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.server import Running, start
from tests.api import ADMIN, Api, P, W, set_, status_of, struct, to_dict, uid
from tests.conftest import TOKENS, metadata

ORCHESTRATOR = "orchestrator-token"
GRANT_ONLY = "grant-only-executor-token"
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_a_malformed_requires_grant_makes_the_file_invalid(value: Any) -> None:
    entry = {"name": "x", "roles": ["executor"], "token_sha256": hash_token("t"), "requires_grant": value}
    with pytest.raises(PrincipalsError):
        Principals.from_json({"principals": [entry]})


def test_requires_grant_is_read() -> None:
    entry = {"name": "x", "roles": ["executor"], "token_sha256": hash_token("t"), "requires_grant": True}
    (principal,) = Principals.from_json({"principals": [entry]})._principals
    assert principal.requires_grant


@pytest.fixture
async def replicas(
    database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path
) -> AsyncIterator[tuple[Running, Running]]:
    """Two server instances on one database: grants issued and stopped on one must hold on both."""
    _, keyring, _ = secrets_files
    principals = tmp_path / "principals.json"
    roles = {"editor": ["editor"], "executor": ["executor"], "directory": ["directory"], "ops": ["ops"]}
    entries: list[dict[str, Any]] = [
        {"name": f"test-{name}", "roles": r, "token_sha256": hash_token(TOKENS[name])} for name, r in roles.items()
    ]
    entries.append({"name": "orchestrator", "roles": ["orchestrator"], "token_sha256": hash_token(ORCHESTRATOR)})
    entries.append(
        {"name": "sandbox", "roles": ["executor"], "token_sha256": hash_token(GRANT_ONLY), "requires_grant": True}
    )
    write_private_json(principals, {"principals": entries})
    instances = []
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
        if all(stopped(i).ready for i in instances):
            break
        await asyncio.sleep(0.05)
    assert all(stopped(i).ready for i in instances)
    try:
        yield instances[0], instances[1]
    finally:
        for instance in instances:
            await instance.stop(grace=1)


def stopped(running: Running) -> StoppedGrants:
    (follower,) = [f for f in running.invalidations.followers if isinstance(f, StoppedGrants)]
    return follower


@pytest.fixture
async def apis(replicas: tuple[Running, Running]) -> AsyncIterator[tuple[Api, Api]]:
    a, b = replicas
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as ca,
        grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as cb,
    ):
        yield Api(ca), Api(cb)


def md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def issue(api: Api, ws: str, user: str, execution: str = "", **fields: Any) -> rpb.IssueRunGrantResponse:
    fields = {"trigger": common.TRIGGER_MANUAL, "triggering_user_id": user, **fields}
    request = rpb.IssueRunGrantRequest(
        workspace_id=ws, workflow_id="wf-1", execution_id=execution or uid("exec"), **fields
    )
    return await api.resolver.IssueRunGrant(request, metadata=md(ORCHESTRATOR))


def resolve(
    api: Api, grant: str, inputs: dict[str, Any], token: str = GRANT_ONLY, **fields: Any
) -> Any:  # the call, to await
    request = rpb.ResolveInputsRequest(
        grant=grant, blocks=[common.BlockInputs(block_id="b", inputs=struct(inputs))], **fields
    )
    return api.resolver.ResolveInputs(request, metadata=md(token))


async def seeded(api: Api) -> tuple[str, str, str]:
    """A workspace with two admins; each has a personal secret MINE, and the workspace has SHARED."""
    ws, user, other = uid("ws"), uid("user"), uid("other")
    await api.member(ws, user, ADMIN)
    await api.member(ws, other, ADMIN)
    await api.save(ws, user, W, set_("SHARED", "shared-value"), set_("OTHER_KEY", "other-key-value"))
    await api.save(ws, user, P, set_("MINE", "user-personal"))
    await api.save(ws, other, P, set_("MINE", "other-personal"))
    return ws, user, other


async def eventually_denied(call: Any, within: float = 1.0) -> bool:
    deadline = time.monotonic() + within
    while True:
        try:
            await call()
        except grpc.aio.AioRpcError as err:
            if err.code() == DENIED:
                return True
            raise
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)


async def test_a_grant_only_executor_cannot_resolve_without_a_grant(apis: tuple[Api, Api]) -> None:
    a, _ = apis
    ws, user, _ = await seeded(a)
    request = rpb.ResolveInputsRequest(
        workspace_id=ws,
        trigger=common.TRIGGER_MANUAL,
        triggering_user_id=user,
        blocks=[common.BlockInputs(block_id="b", inputs=struct({"v": "{{SHARED}}"}))],
    )
    err = await status_of(a.resolver.ResolveInputs(request, metadata=md(GRANT_ONLY)))
    assert err.code() == DENIED and "run grant" in (err.details() or "")
    # An executor without requires_grant keeps today's behaviour.
    reply = await a.resolver.ResolveInputs(request, metadata=metadata("executor"))
    assert to_dict(reply.blocks[0].inputs) == {"v": "shared-value"}
    # Only the orchestrator issues grants.
    for token in (GRANT_ONLY, TOKENS["executor"]):
        err = await status_of(
            a.resolver.IssueRunGrant(
                rpb.IssueRunGrantRequest(
                    workspace_id=ws,
                    workflow_id="wf",
                    execution_id="e",
                    trigger=common.TRIGGER_MANUAL,
                    triggering_user_id=user,
                ),
                metadata=md(token),
            )
        )
        assert err.code() == DENIED


async def test_a_valid_grant_resolves_for_its_run_on_every_replica_and_is_audited(
    apis: tuple[Api, Api],
) -> None:
    a, b = apis
    ws, user, _ = await seeded(a)
    issued = await issue(a, ws, user)
    assert issued.grant.startswith("sgr_") and issued.run_user_id == user
    assert 3590 <= issued.expires_at.seconds - time.time() <= 3600
    for api in (a, b):
        reply = await resolve(api, issued.grant, {"s": "{{SHARED}}", "m": "{{MINE}}"})
        assert to_dict(reply.blocks[0].inputs) == {"s": "shared-value", "m": "user-personal"}
        assert reply.run_user_id == user
    # Repeating the grant's own fields is fine; and a plain executor may send a grant too.
    reply = await resolve(
        a, issued.grant, {"m": "{{MINE}}"}, workspace_id=ws, trigger=common.TRIGGER_MANUAL, triggering_user_id=user
    )
    assert to_dict(reply.blocks[0].inputs) == {"m": "user-personal"}
    reply = await resolve(a, issued.grant, {"m": "{{MINE}}"}, token=TOKENS["executor"])
    assert reply.run_user_id == user
    # The default ttl, and the cap.
    capped = await issue(a, ws, user, ttl_seconds=10**6)
    assert capped.expires_at.seconds - time.time() <= 86400
    await asyncio.sleep(0.2)  # resolve events are buffered
    events = await a.ops.ListAuditEvents(
        opb.ListAuditEventsRequest(workspace_id=ws, page_size=100), metadata=metadata("ops")
    )
    text = str(events)
    assert issued.grant not in text and issued.grant.split(".")[1] not in text
    actions = [e.action for e in events.events]
    assert "grant.issue" in actions
    assert any(e.action == "inputs.resolve" and issued.grant_id in str(e) for e in events.events)


async def test_the_run_comes_from_the_grant_never_the_request(apis: tuple[Api, Api]) -> None:
    a, _ = apis
    ws, user, other = await seeded(a)
    other_ws = uid("ws")
    await a.member(other_ws, user, ADMIN)
    issued = await issue(a, ws, user, execution="exec-1")
    for fields in (
        {"workspace_id": other_ws},
        {"triggering_user_id": other},
        {"workflow_owner_id": other},
        {"trigger": common.TRIGGER_API},
        {"trigger": common.TRIGGER_SCHEDULE, "workflow_owner_id": other},
        {"workflow_id": "wf-other"},
        {"execution_id": "exec-2"},
    ):
        err = await status_of(resolve(a, issued.grant, {"m": "{{MINE}}"}, **fields))
        assert err.code() == DENIED, fields
    # An automated run's grant resolves as the workflow owner, whoever the request names.
    automated = await issue(a, ws, "", trigger=common.TRIGGER_WEBHOOK, workflow_owner_id=other)
    assert automated.run_user_id == other
    reply = await resolve(a, automated.grant, {"m": "{{MINE}}"})
    assert to_dict(reply.blocks[0].inputs) == {"m": "other-personal"}


async def test_a_key_outside_the_grant_is_refused(apis: tuple[Api, Api]) -> None:
    a, _ = apis
    ws, user, _ = await seeded(a)
    issued = await issue(a, ws, user, keys=["SHARED", "MINE"])
    reply = await resolve(a, issued.grant, {"s": "{{SHARED}}", "m": "{{MINE}}"})
    assert to_dict(reply.blocks[0].inputs) == {"s": "shared-value", "m": "user-personal"}
    err = await status_of(resolve(a, issued.grant, {"s": "{{SHARED}}", "x": "{{OTHER_KEY}}"}))
    assert err.code() == DENIED and "OTHER_KEY" in (err.details() or "")
    assert "other-key-value" not in (err.details() or "")
    bad = await status_of(issue(a, ws, user, keys=["not a key"]))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_expired_grant_is_refused(apis: tuple[Api, Api]) -> None:
    a, _ = apis
    ws, user, _ = await seeded(a)
    issued = await issue(a, ws, user, ttl_seconds=2)
    await resolve(a, issued.grant, {"s": "{{SHARED}}"})
    await asyncio.sleep(max(0.0, issued.expires_at.seconds - time.time()) + 0.1)
    err = await status_of(resolve(a, issued.grant, {"s": "{{SHARED}}"}))
    assert err.code() == DENIED and "expired" in (err.details() or "")


async def test_a_revoked_grant_is_refused_on_every_replica_within_a_second(apis: tuple[Api, Api]) -> None:
    a, b = apis
    ws, user, _ = await seeded(a)
    by_id, by_token, kept = await issue(a, ws, user), await issue(a, ws, user), await issue(a, ws, user)
    for grant in (by_id, by_token, kept):
        await resolve(b, grant.grant, {"s": "{{SHARED}}"})
    reply = await a.resolver.RevokeRunGrant(
        rpb.RevokeRunGrantRequest(workspace_id=ws, grant_id=by_id.grant_id), metadata=md(ORCHESTRATOR)
    )
    assert reply.revoked
    reply = await a.resolver.RevokeRunGrant(
        rpb.RevokeRunGrantRequest(workspace_id=ws, grant=by_token.grant), metadata=md(ORCHESTRATOR)
    )
    assert reply.revoked
    for grant in (by_id, by_token):
        # On the replica that revoked it, at once; on the other, once the notification lands.
        err = await status_of(resolve(a, grant.grant, {"s": "{{SHARED}}"}))
        assert err.code() == DENIED and "revoked" in (err.details() or "")
        assert await eventually_denied(lambda g=grant: resolve(b, g.grant, {"s": "{{SHARED}}"}))
    await resolve(b, kept.grant, {"s": "{{SHARED}}"})
    again = await a.resolver.RevokeRunGrant(
        rpb.RevokeRunGrantRequest(workspace_id=ws, grant_id=by_id.grant_id), metadata=md(ORCHESTRATOR)
    )
    assert not again.revoked
    for request in (
        rpb.RevokeRunGrantRequest(workspace_id=uid("ws"), grant_id=kept.grant_id),
        rpb.RevokeRunGrantRequest(workspace_id=ws, grant_id="no-such-grant"),
    ):
        err = await status_of(a.resolver.RevokeRunGrant(request, metadata=md(ORCHESTRATOR)))
        assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await status_of(
        a.resolver.RevokeRunGrant(rpb.RevokeRunGrantRequest(workspace_id=ws), metadata=md(ORCHESTRATOR))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_ended_run_refuses_its_grants_on_every_replica(apis: tuple[Api, Api]) -> None:
    a, b = apis
    ws, user, _ = await seeded(a)
    first, second = await issue(a, ws, user, execution="exec-end"), await issue(a, ws, user, execution="exec-end")
    other_run = await issue(a, ws, user, execution="exec-goes-on")
    ended = await a.resolver.EndRun(
        rpb.EndRunRequest(workspace_id=ws, execution_id="exec-end"), metadata=md(ORCHESTRATOR)
    )
    assert ended.grants_ended == 2
    for grant in (first, second):
        err = await status_of(resolve(a, grant.grant, {"s": "{{SHARED}}"}))
        assert err.code() == DENIED
        assert await eventually_denied(lambda g=grant: resolve(b, g.grant, {"s": "{{SHARED}}"}))
    await resolve(b, other_run.grant, {"s": "{{SHARED}}"})
    err = await status_of(issue(a, ws, user, execution="exec-end"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_while_the_listener_is_down_grants_are_checked_in_the_database(
    apis: tuple[Api, Api], replicas: tuple[Running, Running], database_url: str
) -> None:
    a, b = apis
    ws, user, _ = await seeded(a)
    issued = await issue(a, ws, user)
    follower = stopped(replicas[1])
    follower.lost()  # as when b's listener disconnects: notifications may be missed from now on
    checks = follower.database_checks
    await resolve(b, issued.grant, {"s": "{{SHARED}}"})
    assert follower.database_checks == checks + 1
    # A revocation b hears nothing about (no notification at all) is still seen.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE run_grants SET revoked_at = now() WHERE id = $1", issued.grant_id)
    finally:
        await conn.close()
    err = await status_of(resolve(b, issued.grant, {"s": "{{SHARED}}"}))
    assert err.code() == DENIED
    # Reconnected: the set is loaded again from the database, and holds it.
    fresh = await issue(a, ws, user)
    follower.listening()
    for _ in range(100):
        if follower.ready:
            break
        await asyncio.sleep(0.01)
    assert follower.ready
    err = await status_of(resolve(b, issued.grant, {"s": "{{SHARED}}"}))
    assert err.code() == DENIED
    await resolve(b, fresh.grant, {"s": "{{SHARED}}"})


def _flip(token: str, index: int) -> str:
    chars = list(token)
    chars[index] = "A" if chars[index] != "A" else "B"
    return "".join(chars)


async def test_tampered_forged_and_malformed_grants_are_refused(apis: tuple[Api, Api]) -> None:
    a, _ = apis
    ws, user, other = await seeded(a)
    issued = await issue(a, ws, user)
    body, _, tag = issued.grant.removeprefix("sgr_").partition(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    # The same claims naming another run user, under the original tag.
    swapped = raw.replace(user.encode(), other.encode())
    forged_body = base64.urlsafe_b64encode(swapped).rstrip(b"=").decode()
    cases = [
        _flip(issued.grant, 10),
        _flip(issued.grant, len(issued.grant) - 3),
        f"sgr_{forged_body}.{tag}",
        f"sgr_{forged_body}.{base64.urlsafe_b64encode(bytes(32)).rstrip(b'=').decode()}",
        issued.grant[:-5],
        "sgr_",
        "sgr_!!!.???",
        "not-a-grant",
        "sgr_" + "A" * 300_000,
        issued.grant + ".extra",
    ]
    for token in cases:
        err = await status_of(resolve(a, token, {"s": "{{SHARED}}"}))
        assert err.code() in (DENIED, grpc.StatusCode.UNAUTHENTICATED), (token[:40], err.code())


async def test_the_python_client_issues_resolves_with_and_ends_a_grant(
    apis: tuple[Api, Api], replicas: tuple[Running, Running]
) -> None:
    from secrets_client import ExecutorClient, OrchestratorClient, PermissionDenied

    a, _ = apis
    ws, user, _ = await seeded(a)
    address = f"127.0.0.1:{replicas[0].port}"
    async with (
        OrchestratorClient(address, ORCHESTRATOR) as orchestrator,
        ExecutorClient(address, GRANT_ONLY) as executor,
    ):
        grant = await orchestrator.issue_grant(ws, "wf", "exec-client", triggering_user_id=user, keys=["MINE"])
        assert grant.token not in repr(grant) and grant.run_user_id == user
        resolution = await executor.resolve("", {"b": {"m": "{{MINE}}"}}, grant=grant.token)
        assert resolution.blocks["b"].inputs == {"m": "user-personal"}
        assert await orchestrator.end_run(ws, "exec-client") == 1
        with pytest.raises(PermissionDenied):
            await executor.resolve("", {"b": {"m": "{{MINE}}"}}, grant=grant.token)
        assert not await orchestrator.revoke_grant(ws, grant_id=grant.grant_id)

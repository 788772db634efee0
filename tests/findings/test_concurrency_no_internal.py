"""Every editor and directory write at once on the same few keys of one workspace: no INTERNAL.

Saves, renames, restores, imports (overwriting), detail edits, secret member changes and
workspace member changes race on four keys. Losing a race is a real status a client can act on
(ABORTED: reload and retry; ALREADY_EXISTS, NOT_FOUND, FAILED_PRECONDITION: the state moved on);
a deadlock, a unique index firing or a lock timeout surfacing as INTERNAL or UNKNOWN is a bug
(finding 9). tests/integration/test_concurrency.py covers concurrent saves alone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import grpc
import pytest

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import directory_pb2 as dpb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, WRITE, Api, W, set_, uid
from tests.conftest import metadata

KEYS = ["K0", "K1", "K2", "K3"]
CALLS = 300
ALLOWED = {"OK", "ABORTED", "ALREADY_EXISTS", "NOT_FOUND", "FAILED_PRECONDITION"}


async def test_concurrent_writes_on_the_same_keys_never_internal(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    api = Api(channel)
    ws = uid("ws")
    admins = [uid("admin"), uid("admin")]
    others = [uid("m"), uid("m"), uid("m")]
    for a in admins:
        await api.member(ws, a, ADMIN)
    for m in others:
        await api.member(ws, m, READ)
    for key in KEYS:
        await api.save(ws, admins[0], W, set_(key, f"{key}-v1"))
        await api.save(ws, admins[0], W, set_(key, f"{key}-v2"))

    counts: Counter[str] = Counter()
    per_rpc: Counter[str] = Counter()
    odd: list[str] = []
    budget = [CALLS]

    async def call(name: str, awaitable: Any) -> Any:
        budget[0] -= 1
        per_rpc[name] += 1
        try:
            reply = await awaitable
        except grpc.aio.AioRpcError as err:
            counts[err.code().name] += 1
            if err.code().name not in ALLOWED:
                odd.append(f"{name}: {err.code().name} {err.details()}")
            return None
        counts["OK"] += 1
        return reply

    async def revision(md: list[tuple[str, str]]) -> int | None:
        listing = await call("ListSecrets", api.store.ListSecrets(spb.ListSecretsRequest(workspace_id=ws), metadata=md))
        return None if listing is None else int(listing.workspace_revision)

    async def one(rng: random.Random) -> None:
        user = rng.choice(admins)
        md = metadata("editor", user)
        key = rng.choice(KEYS)
        other_key = rng.choice([k for k in KEYS if k != key])
        op = rng.choice(["save", "rename", "restore", "import", "details", "member", "unmember", "put"])
        if op == "save":
            rev = await revision(md)
            if rev is not None:
                request = spb.SaveSecretsRequest(
                    workspace_id=ws, scope=W, expected_revision=rev, changes=[set_(key, f"{key}-{rng.random()}")]
                )
                await call("SaveSecrets(set)", api.store.SaveSecrets(request, metadata=md))
        elif op == "rename":
            rev = await revision(md)
            if rev is not None:
                request = spb.SaveSecretsRequest(
                    workspace_id=ws,
                    scope=W,
                    expected_revision=rev,
                    changes=[spb.SecretChange(key=key, rename_to=other_key)],
                )
                await call("SaveSecrets(rename)", api.store.SaveSecrets(request, metadata=md))
        elif op == "restore":
            got = await call(
                "GetSecret",
                api.store.GetSecret(spb.GetSecretRequest(workspace_id=ws, scope=W, key=key), metadata=md),
            )
            if got is not None and len(got.secret.versions) >= 2:
                request = spb.RestoreSecretVersionRequest(
                    workspace_id=ws, scope=W, key=key, version=got.secret.versions[1].version
                )
                await call("RestoreSecretVersion", api.store.RestoreSecretVersion(request, metadata=md))
        elif op == "import":
            rev = await revision(md)
            if rev is not None:
                content = f"{key}=imported-{rng.random()}\n{other_key}=imported-{rng.random()}\n"
                request = spb.ImportDotenvRequest(
                    workspace_id=ws, scope=W, content=content, overwrite_existing=True, expected_revision=rev
                )
                await call("ImportDotenv", api.store.ImportDotenv(request, metadata=md))
        elif op == "details":
            request = spb.UpdateSecretDetailsRequest(
                workspace_id=ws, scope=W, key=key, description=f"d{rng.random()}", restricted=rng.random() < 0.5
            )
            await call("UpdateSecretDetails", api.store.UpdateSecretDetails(request, metadata=md))
        elif op == "member":
            request = spb.SetSecretMemberRequest(
                workspace_id=ws,
                key=key,
                email=f"{rng.choice(others)}@example.com",
                role=rng.choice([common.SECRET_ROLE_MEMBER, common.SECRET_ROLE_ADMIN]),
            )
            await call("SetSecretMember", api.store.SetSecretMember(request, metadata=md))
        elif op == "unmember":
            request = spb.RemoveSecretMemberRequest(workspace_id=ws, key=key, email=f"{rng.choice(others)}@example.com")
            await call("RemoveSecretMember", api.store.RemoveSecretMember(request, metadata=md))
        else:
            # Members change permission, and now and then two of them claim one email.
            target = rng.choice(others)
            email = f"{rng.choice(others)}@example.com" if rng.random() < 0.3 else f"{target}@example.com"
            request = dpb.PutWorkspaceMemberRequest(
                workspace_id=ws, user_id=target, email=email, permission=rng.choice([READ, WRITE])
            )
            await call("PutWorkspaceMember", api.directory.PutWorkspaceMember(request, metadata=metadata("directory")))

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while budget[0] > 0 and time.monotonic() < deadline:
            await one(rng)

    began = time.monotonic()
    deadline = began + 20
    await asyncio.gather(*(worker(seed) for seed in range(16)))
    elapsed = time.monotonic() - began

    causes = [r.getMessage().splitlines()[0] for r in caplog.records if "internal error" in r.getMessage()]
    assert not odd, (
        f"{len(odd)} of {sum(counts.values())} calls got a status outside {sorted(ALLOWED)}: {dict(counts)}\n"
        + "\n".join(odd[:15])
        + ("\nserver log: " + "; ".join(causes[:10]) if causes else "")
    )
    assert sum(counts.values()) >= CALLS, f"only {sum(counts.values())} calls in {elapsed:.1f} s: {dict(per_rpc)}"
    # The races were real: every kind of write ran, and some of them lost.
    assert len(per_rpc) >= 9, dict(per_rpc)
    assert counts["OK"] > 0 and counts["OK"] < sum(counts.values()), dict(counts)

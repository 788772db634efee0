"""Canary values saved through every editor path appear nowhere but in resolved inputs: not in a
database dump, the server's log at its most verbose, an editor response or error, or the audit log."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from service.crypto.keyring import new_keyring_document, write_private_json
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, Api, P, W, delete, rename, set_, status_of, struct, to_dict, uid
from tests.conftest import metadata, write_principals
from tests.integration.test_no_plaintext import dump_database
from tests.leaks import canary, find_canaries
from tests.proc import ServerProcess
from tests.recording import ResponseRecorder


@pytest.fixture
async def database_url(fresh_database_url: str) -> str:
    """This module's servers use keyrings of their own, so each test gets a database of its own."""
    return fresh_database_url


pytestmark = pytest.mark.slow


async def test_canaries_through_every_editor_path_leak_nowhere(database_url: str, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document())
    server = ServerProcess(
        {
            "SECRETS_DATABASE_URL": database_url,
            "SECRETS_KEYRING_FILE": str(keyring),
            "SECRETS_PRINCIPALS_FILE": str(write_principals(tmp_path / "principals.json")),
            "SECRETS_DATA_DIR": str(tmp_path / "d"),
            "SECRETS_LOG_LEVEL": "DEBUG",
            "GRPC_VERBOSITY": "debug",
        },
        tmp_path / "server.log",
    )
    canaries: list[str] = []

    def c(label: str) -> str:
        canaries.append(canary(label))
        return canaries[-1]

    recorder = ResponseRecorder()
    failures = 0
    try:
        async with grpc.aio.insecure_channel(server.address, interceptors=[recorder]) as channel:
            api = Api(channel)
            ws, boss, member = uid("ws"), uid("boss"), uid("member")
            await api.member(ws, boss, ADMIN)
            await api.member(ws, member, READ)
            md = metadata("editor", boss)
            # SaveSecrets: create, update, rename, delete, in both scopes.
            await api.save(ws, boss, W, set_("A", c("create")), set_("B", c("create2")), set_("GONE", c("gone")))
            await api.save(ws, boss, W, set_("A", c("update")), rename("B", "B2"), delete("GONE"))
            await api.save(ws, boss, P, set_("MINE", c("personal")))
            # ImportDotenv: dry run, real run, overwrite, and lines with problems.
            text = "\n".join(
                [
                    f"IMPORTED={c('import')}",
                    f"A={c('import-over')}",
                    f"bad-key={c('badkey')}",
                    f"{c('no-equals')}",
                    f'OPEN="{c("unterminated")}',
                ]
            )
            for dry in (True, False):
                await api.store.ImportDotenv(
                    spb.ImportDotenvRequest(
                        workspace_id=ws,
                        scope=W,
                        content=text,
                        dry_run=dry,
                        overwrite_existing=True,
                        expected_revision=2,
                    ),
                    metadata=md,
                )
            # Details, members, versions, restore, lookups.
            await api.store.UpdateSecretDetails(
                spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="A", description="rotated monthly"),
                metadata=md,
            )
            await api.store.SetSecretMember(
                spb.SetSecretMemberRequest(
                    workspace_id=ws, key="A", email=f"{member}@example.com", role=common.SECRET_ROLE_MEMBER
                ),
                metadata=md,
            )
            await api.store.RestoreSecretVersion(
                spb.RestoreSecretVersionRequest(workspace_id=ws, scope=W, key="A", version=1), metadata=md
            )
            await api.store.GetSecret(spb.GetSecretRequest(workspace_id=ws, scope=W, key="A"), metadata=md)
            await api.list(ws, boss)
            await api.store.ListReferenceable(spb.ListReferenceableRequest(workspace_id=ws), metadata=md)
            await api.store.ExplainReferences(
                spb.ExplainReferencesRequest(
                    workspace_id=ws,
                    trigger=common.TRIGGER_MANUAL,
                    blocks=[common.BlockInputs(block_id="b", inputs=struct({"v": "{{A}} {{MINE}}"}))],
                ),
                metadata=md,
            )
            # Failing paths that carry a value: every one must fail without echoing it.
            for changes in (
                [set_("bad key", c("err-badkey"))],
                [set_("BIG", c("err-big") + "x" * 70_000)],
                [set_("DUP", c("err-dup1")), set_("DUP", c("err-dup2"))],
                [set_("A", c("err-stale"))],
            ):
                await status_of(api.save(ws, boss, W, *changes, expected=0 if changes[0].key == "A" else 99))
                failures += 1
            await status_of(api.save(ws, member, W, set_("A", c("err-denied"))))
            failures += 1
            # The resolver hands values out (that is its job), and logs and audits none of them.
            reply = await api.resolve(ws, {"b": {"a": "{{A}}", "i": "{{IMPORTED}}", "m": "{{MINE}}"}}, user=boss)
            assert to_dict(reply.blocks[0].inputs)["i"] in canaries
            audit = await api.ops.ListAuditEvents(
                opb.ListAuditEventsRequest(workspace_id=ws, page_size=500), metadata=metadata("ops")
            )
            assert len(audit.events) >= 10
            audit_bytes = b"".join(e.SerializeToString() for e in audit.events)
    finally:
        exit_code = server.terminate()
    assert exit_code == 0
    assert recorder.recorded_calls >= 20 and failures == 5

    log = server.log()
    assert "DEBUG" in log  # the most verbose level really was on
    places = {
        "database": await dump_database(database_url),
        "server log": log.encode(),
        "editor responses and errors": recorder.everything(),
        "audit log": audit_bytes,
    }
    for place, blob in places.items():
        assert find_canaries(blob, canaries) == [], f"a value leaked into the {place}"

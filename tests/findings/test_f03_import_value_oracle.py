"""Finding 3: ImportDotenv confirmed a guessed value to a caller who may not change the secret.

It opened and compared the stored value before checking the caller's right to change it, so a
right guess came back UNCHANGED and a wrong one SKIPPED; a READ member recovered a 4-digit PIN
in 7,346 dry runs, none of them audited. Now a caller who may not change a secret gets the same
report for any guess, and dry runs are audited like imports.
"""

from __future__ import annotations

import grpc

from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, WRITE, Api, W, set_, uid
from tests.conftest import metadata


async def _import(api: Api, ws: str, user: str, content: str, *, dry_run: bool) -> spb.ImportDotenvResponse:
    expected = await api.revision(ws, user, W)
    return await api.store.ImportDotenv(
        spb.ImportDotenvRequest(
            workspace_id=ws,
            scope=W,
            content=content,
            dry_run=dry_run,
            overwrite_existing=False,
            expected_revision=expected,
        ),
        metadata=metadata("editor", user),
    )


async def _setup(api: Api) -> tuple[str, str, str]:
    ws, admin = uid("ws"), uid("admin")
    await api.member(ws, admin, ADMIN)
    await api.save(ws, admin, W, set_("PIN", "4711"))
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="PIN", restricted=True),
        metadata=metadata("editor", admin),
    )
    return ws, admin, "4711"


async def test_f03_a_read_member_gets_the_same_report_for_a_right_and_a_wrong_guess(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, _, pin = await _setup(api)
    for permission in (READ, WRITE):
        reader = uid("reader")
        await api.member(ws, reader, permission)
        for dry_run in (True, False):
            right = await _import(api, ws, reader, f"PIN={pin}\n", dry_run=dry_run)
            wrong = await _import(api, ws, reader, "PIN=0000\n", dry_run=dry_run)
            assert [(e.key, e.action, e.note) for e in right.entries] == [
                (e.key, e.action, e.note) for e in wrong.entries
            ]
            assert right.entries[0].action == spb.IMPORT_ACTION_SKIPPED


async def test_f03_the_secret_admin_still_learns_unchanged(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, admin, pin = await _setup(api)
    same = await _import(api, ws, admin, f"PIN={pin}\n", dry_run=True)
    other = await _import(api, ws, admin, "PIN=0000\n", dry_run=True)
    assert same.entries[0].action == spb.IMPORT_ACTION_UNCHANGED
    assert other.entries[0].action == spb.IMPORT_ACTION_SKIPPED


async def test_f03_dry_runs_are_audited(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, _, _ = await _setup(api)
    reader = uid("reader")
    await api.member(ws, reader, READ)
    await _import(api, ws, reader, "PIN=1234\n", dry_run=True)
    page = await api.ops.ListAuditEvents(opb.ListAuditEventsRequest(workspace_id=ws), metadata=metadata("ops"))
    dry = [e for e in page.events if e.action == "secrets.import" and e.user_id == reader]
    assert len(dry) == 1 and dry[0].outcome == "dry_run"

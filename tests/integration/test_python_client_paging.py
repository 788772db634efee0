"""The Python client's paging helpers against the real server (issue 10 items 5 and 6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from secrets_client import DirectoryClient, EditorClient, InvalidArgument, OpsClient

from tests.api import uid
from tests.conftest import TOKENS, Server


async def test_iterate_every_page_and_filter_the_audit_log(server: Server) -> None:
    async with (
        EditorClient(server.address, TOKENS["editor"]) as editor,
        DirectoryClient(server.address, TOKENS["directory"]) as directory,
        OpsClient(server.address, TOKENS["ops"]) as ops,
    ):
        ws, user = uid("ws"), uid("user")
        for i in range(250):
            await directory.put_member(ws, f"{user}-{i:03d}", f"{user}-{i:03d}@example.com", "read")
        await directory.put_member(ws, user, f"{user}@example.com", "admin")
        members = await directory.list_members(ws, page_size=100)
        assert [m.user_id for m in members] == sorted([user] + [f"{user}-{i:03d}" for i in range(250)])

        await editor.save(user, ws, expected_revision=0, set={f"K{i:03d}": "v" for i in range(230)})
        await editor.save(user, ws, scope="personal", expected_revision=0, set={"MINE": "v"})
        first = await editor.list_secrets(user, ws)
        assert len(first.workspace_secrets) == 100 and first.next_page_token
        listed = [s.key async for s in editor.iter_secrets(user, ws, page_size=70)]
        assert listed == [f"K{i:03d}" for i in range(230)] + ["MINE"]
        refs = await editor.list_referenceable(user, ws, "K1", page_size=5)
        assert [k.key for k in refs.workspace] == ["K100", "K101", "K102", "K103", "K104"]
        try:
            await editor.list_secrets(user, ws, page_token="nonsense")
        except InvalidArgument as exc:
            assert [field for field, _ in exc.violations] == ["page_token"]
        else:
            raise AssertionError("a bad page token was accepted")

        saves = [e async for e in ops.audit_events(ws, page_size=1, action="secrets.save", user_id=user)]
        assert len(saves) == 2 and {e.action for e in saves} == {"secrets.save"}
        now = datetime.now(UTC)
        recent = [
            e async for e in ops.audit_events(ws, start=now - timedelta(minutes=5), end=now + timedelta(minutes=1))
        ]
        assert len(recent) == 253
        assert [e.action async for e in ops.audit_events(ws, key="K007")] == ["secrets.save"]

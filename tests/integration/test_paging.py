"""Paging (issue 10 item 6): ListSecrets, ListReferenceable and ListWorkspaceMembers page by keyset
with opaque tokens; a workspace of 100,000 secrets lists in pages under 1 MiB, and the listing stays
consistent while saves and deletes happen between pages."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from service.domain import paging
from service.gen.secrets.v1 import directory_pb2 as dpb
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, Api, P, W, delete, set_, status_of, uid
from tests.conftest import Server, metadata

MIB = 1024 * 1024


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    fields = []
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    fields.extend(v.field for v in bad.field_violations)
    return fields


async def insert_secrets(url: str, ws: str, user: str, keys: list[str], description: str = "", scope: int = W) -> None:
    """Rows written straight into the table with COPY (a listing never opens a value, so the
    sealed bytes are a placeholder): 100,000 in about a second, not 100,000 RPCs."""
    conn = await asyncpg.connect(url)
    try:
        ids = [
            r["id"]
            for r in await conn.fetch("SELECT nextval('secrets_id_seq') AS id FROM generate_series(1, $1)", len(keys))
        ]
        now = datetime.now(UTC)
        await conn.copy_records_to_table(
            "secrets",
            columns=[
                "id",
                "scope",
                "owner_id",
                "key",
                "version",
                "sealed",
                "description",
                "created_by",
                "updated_by",
                "created_at",
                "updated_at",
            ],
            records=[
                (i, scope, ws if scope == W else user, k, 1, b"\x00", description, user, user, now, now)
                for i, k in zip(ids, keys, strict=True)
            ],
        )
    finally:
        await conn.close()


async def list_page(api: Api, ws: str, user: str, size: int = 0, token: str = "") -> spb.ListSecretsResponse:
    return await api.store.ListSecrets(
        spb.ListSecretsRequest(workspace_id=ws, page_size=size, page_token=token), metadata=metadata("editor", user)
    )


async def test_100000_secrets_list_in_pages_under_1_mib_consistently_while_saves_happen(
    channel: grpc.aio.Channel, server: Server
) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    # Even numbers are stored; odd ones are created between pages, before and after the cursor.
    await api.save(ws, user, W, set_("K000000", "v"))  # the workspace's data key, through the API
    started = time.monotonic()
    await insert_secrets(
        server.settings.database_url or "", ws, user, [f"K{i:06d}" for i in range(2, 200_000, 2)], "d" * 40
    )
    inserted = time.monotonic() - started
    await api.save(ws, user, P, set_("MINE_A", "v"), set_("K000004", "v"))

    listed: list[tuple[int, str]] = []
    created_after: set[str] = set()
    deleted: set[str] = set()
    token, pages, largest = "", 0, 0
    started = time.monotonic()
    while True:
        page = await list_page(api, ws, user, 1000, token)
        pages += 1
        largest = max(largest, page.ByteSize())
        assert page.ByteSize() < MIB
        listed += [(W, s.key) for s in page.workspace_secrets] + [(P, s.key) for s in page.personal_secrets]
        token = page.next_page_token
        if not token:
            break
        last = listed[-1][1]
        n = int(last[1:]) if last.startswith("K") else 0
        if listed[-1][0] == W and n < 199_000:
            # Between pages: a key created behind the cursor (not listed), one ahead of it (listed
            # once), one deleted ahead of it (not listed), one updated ahead of it (listed once).
            behind, ahead, gone, changed = f"K{n - 1:06d}", f"K{n + 501:06d}", f"K{n + 600:06d}", f"K{n + 700:06d}"
            await api.save(ws, user, W, set_(behind, "v"), set_(ahead, "v"), delete(gone), set_(changed, "w"))
            created_after.add(ahead)
            deleted.add(gone)
    paged = time.monotonic() - started

    keys = [k for s, k in listed if s == W]
    assert len(set(listed)) == len(listed), "a key was listed twice"
    assert keys == sorted(keys)  # by key, the workspace's first
    assert [k for s, k in listed if s == P] == ["K000004", "MINE_A"]
    expected = {f"K{i:06d}" for i in range(0, 200_000, 2)} - deleted | created_after
    assert set(keys) == expected, (len(expected - set(keys)), len(set(keys) - expected))
    assert pages >= 100 and created_after and deleted
    print(
        f"\n100,000 secrets: inserted in {inserted:.1f} s; {pages} pages of 1,000 in {paged:.1f} s "
        f"with a save between pages; largest page {largest:,} bytes"
    )


async def test_pages_end_before_1_mib_whatever_the_page_size(channel: grpc.aio.Channel, server: Server) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    # The longest descriptions, in 4-byte UTF-8 characters: 8 KB a secret, 8 MB for 1,000.
    await insert_secrets(
        server.settings.database_url or "", ws, user, [f"LONG_{i:04d}" for i in range(1000)], "\U0001f511" * 2000
    )
    token, total, pages = "", 0, 0
    while True:
        page = await list_page(api, ws, user, 1000, token)
        assert 0 < page.ByteSize() < MIB and page.workspace_secrets
        total += len(page.workspace_secrets)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert total == 1000 and pages > 8


async def test_page_size_default_maximum_and_negative(channel: grpc.aio.Channel, server: Server) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await insert_secrets(server.settings.database_url or "", ws, user, [f"S{i:05d}" for i in range(1500)])
    assert len((await list_page(api, ws, user)).workspace_secrets) == paging.DEFAULT_PAGE_SIZE == 100
    assert len((await list_page(api, ws, user, 7)).workspace_secrets) == 7
    biggest = await list_page(api, ws, user, 2**31 - 1)
    assert len(biggest.workspace_secrets) == paging.MAX_PAGE_SIZE == 1000
    rest = await list_page(api, ws, user, 5000, biggest.next_page_token)
    assert len(rest.workspace_secrets) == 500 and rest.next_page_token == ""
    # A page that ends exactly at the last secret says so: no empty page after it.
    exact = await list_page(api, ws, user, 500, biggest.next_page_token)
    assert len(exact.workspace_secrets) == 500 and exact.next_page_token == ""
    for size in (-1, -(2**31)):
        err = await status_of(list_page(api, ws, user, size))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(err) == ["page_size"]
    ops = metadata("ops")
    err = await status_of(api.ops.ListAuditEvents(opb.ListAuditEventsRequest(page_size=-1), metadata=ops))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["page_size"]
    err = await status_of(
        api.directory.ListWorkspaceMembers(
            dpb.ListWorkspaceMembersRequest(workspace_id=ws, page_size=-5), metadata=metadata("directory")
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["page_size"]


def reencode(token: str, change: dict[int, object]) -> str:
    payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for index, value in change.items():
        payload[index] = value
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_bad_page_tokens_are_invalid_argument(channel: grpc.aio.Channel, server: Server) -> None:
    api = Api(channel)
    ws, other_ws, user, other = uid("ws"), uid("ws"), uid("user"), uid("user")
    for w in (ws, other_ws):
        await api.member(w, user, ADMIN)
        await api.member(w, other, ADMIN)
        await insert_secrets(server.settings.database_url or "", w, user, [f"T{i:03d}" for i in range(30)])
    token = (await list_page(api, ws, user, 10)).next_page_token
    referenceable = (
        await api.store.ListReferenceable(
            spb.ListReferenceableRequest(workspace_id=ws, page_size=10), metadata=metadata("editor", user)
        )
    ).next_page_token
    members = (
        await api.directory.ListWorkspaceMembers(
            dpb.ListWorkspaceMembersRequest(workspace_id=ws, page_size=1), metadata=metadata("directory")
        )
    ).next_page_token
    assert token and referenceable and members
    # The token works, for the listing that issued it.
    assert (await list_page(api, ws, user, 10, token)).workspace_secrets[0].key == "T010"

    bad = {
        "garbage": "not a token",
        "not base64url": token + "+/",
        "padded": token + "=",
        "truncated": token[:-3],
        "another workspace": None,  # filled below: same token, other workspace
        "another user": None,
        "ListReferenceable's": referenceable,
        "ListWorkspaceMembers'": members,
        "version 2": reencode(token, {0: 2}),
        "digest changed": reencode(token, {2: "0" * 16}),
        "scope 3": reencode(token, {3: 3}),
        "key not a key": reencode(token, {4: "T 1"}),
        "scope a string": reencode(token, {3: "1"}),
        "too long": "A" * 5000,
        "NUL": "\x00",
    }
    for name, value in bad.items():
        w, u = ws, user
        if name == "another workspace":
            value, w = token, other_ws
        elif name == "another user":
            value, u = token, other
        assert value is not None
        err = await status_of(list_page(api, w, u, 10, value))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.code(), err.details())
        assert violations(err) == ["page_token"], name
        assert value[:40] not in (err.details() or "") or len(value) < 8, "the token is not echoed"
    # The token of another listing, the other way round.
    err = await status_of(
        api.directory.ListWorkspaceMembers(
            dpb.ListWorkspaceMembersRequest(workspace_id=ws, page_token=token), metadata=metadata("directory")
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(err) == ["page_token"]


async def test_members_page_by_user_id_consistently_while_members_change(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws = uid("ws")
    users = [f"u{i:04d}" for i in range(0, 500, 2)]
    for u in users:
        await api.member(ws, u, READ)
    seen: list[str] = []
    token = ""
    removed, added = set(), set()
    while True:
        page = await api.directory.ListWorkspaceMembers(
            dpb.ListWorkspaceMembersRequest(workspace_id=ws, page_size=40, page_token=token),
            metadata=metadata("directory"),
        )
        seen += [m.user_id for m in page.members]
        token = page.next_page_token
        if not token:
            break
        n = int(seen[-1][1:])
        # Renamed (a new email), added ahead and behind, removed ahead: the listing is by user id.
        await api.member(ws, f"u{n + 2:04d}", READ, email=f"renamed-{n}@example.com")
        await api.member(ws, f"u{n + 11:04d}", READ)
        await api.member(ws, f"u{n - 1:04d}", READ)
        added.add(f"u{n + 11:04d}")
        if n + 20 < 500:
            await api.directory.RemoveWorkspaceMember(
                dpb.RemoveWorkspaceMemberRequest(workspace_id=ws, user_id=f"u{n + 20:04d}"),
                metadata=metadata("directory"),
            )
            removed.add(f"u{n + 20:04d}")
    assert seen == sorted(set(seen))
    assert set(seen) == (set(users) - removed) | added


async def test_referenceable_pages_keep_prefix_and_permissions(channel: grpc.aio.Channel, server: Server) -> None:
    api = Api(channel)
    ws, admin, reader = uid("ws"), uid("admin"), uid("reader")
    await api.member(ws, admin, ADMIN)
    await api.member(ws, reader, READ)
    url = server.settings.database_url or ""
    await insert_secrets(url, ws, admin, [f"API_{i:03d}" for i in range(250)] + [f"DB_{i:03d}" for i in range(50)])
    # Every tenth API_ key restricted: the reader may not use those, the admin may.
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE secrets SET restricted = true WHERE owner_id = $1 AND key LIKE 'API\\_%' AND right(key, 1) = '0'",
            ws,
        )
    finally:
        await conn.close()
    await api.save(ws, reader, P, set_("API_005", "mine"), set_("API_010", "mine"), set_("DB_X", "mine"))

    async def all_pages(user: str) -> tuple[list[str], list[tuple[str, bool]], int]:
        workspace: list[str] = []
        personal: list[tuple[str, bool]] = []
        token, pages = "", 0
        while True:
            page = await api.store.ListReferenceable(
                spb.ListReferenceableRequest(workspace_id=ws, prefix="API_", page_size=30, page_token=token),
                metadata=metadata("editor", user),
            )
            pages += 1
            workspace += [k.key for k in page.workspace]
            personal += [(k.key, k.shadowed) for k in page.personal]
            token = page.next_page_token
            if not token:
                return workspace, personal, pages

    workspace, personal, _ = await all_pages(reader)
    assert workspace == [f"API_{i:03d}" for i in range(250) if i % 10]
    # API_005 is hidden by a workspace key the reader may use; API_010's workspace key is
    # restricted, so the reader's own one is used.
    assert personal == [("API_005", True), ("API_010", False)]
    workspace, personal, pages = await all_pages(admin)
    assert workspace == [f"API_{i:03d}" for i in range(250)] and personal == [] and pages == 9


@pytest.mark.parametrize("rpc", ["ListSecrets", "ListReferenceable"])
async def test_a_non_member_is_refused_before_any_page(channel: grpc.aio.Channel, rpc: str) -> None:
    api = Api(channel)
    ws, outsider = uid("ws"), uid("outsider")
    await api.member(ws, uid("admin"), ADMIN)
    request = (
        spb.ListSecretsRequest(workspace_id=ws)
        if rpc == "ListSecrets"
        else spb.ListReferenceableRequest(workspace_id=ws)
    )
    err = await status_of(getattr(api.store, rpc)(request, metadata=metadata("editor", outsider)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED

"""The paged listings of secrets (ListSecrets, ListReferenceable) and workspace members
(ListWorkspaceMembers): keyset pages with opaque tokens (service/domain/paging.py).

A secrets listing is the workspace's secrets by key, then the caller's personal secrets by key;
the cursor is the (scope, key) of the last one listed. Each page is read in one repeatable-read
transaction, so the page, its shadowed flags and the revisions it reports are one snapshot; the
next page continues after the cursor, whatever was saved meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.app.context import Caller
from service.domain import paging, policy
from service.domain.keys import id_problem, is_valid_key, require_id
from service.domain.limits import MAX_KEY_LENGTH
from service.domain.model import Scope
from service.domain.resolution import shadowed_keys
from service.store import listings as store
from service.store import repository as repo
from service.store.pool import Database

SECRETS_LISTING = "secrets"
REFERENCEABLE_LISTING = "referenceable"
MEMBERS_LISTING = "members"


@dataclass(frozen=True, slots=True)
class SecretsPage:
    workspace: list[repo.SecretRow]
    personal: list[repo.SecretRow]
    # Personal keys of this page that a workspace key of the same name hides at run time.
    shadowed: frozenset[str]
    workspace_revision: int
    personal_revision: int
    next_page_token: str


def _secret_bytes(row: repo.SecretRow) -> int:
    return paging.message_bytes((row.key, row.display_name, row.description, row.created_by, row.updated_by))


def _secrets_cursor(token: str, listing: str, digest: str) -> tuple[Scope, str] | None:
    if not token:
        return None
    scope, key = paging.decode_token(token, listing, digest, (int, str))
    assert isinstance(scope, int) and isinstance(key, str)
    if scope not in (int(Scope.WORKSPACE), int(Scope.PERSONAL)) or not is_valid_key(key):
        raise paging.bad_cursor()
    return Scope(scope), key


async def secrets_page(
    db: Database,
    caller: Caller,
    workspace_id: str,
    page_size: int,
    page_token: str,
    *,
    referenceable_prefix: str | None = None,
    expiring_within: timedelta | None = None,
) -> SecretsPage:
    """One page of ListSecrets, or of ListReferenceable when `referenceable_prefix` is given (then
    only workspace secrets a run of the caller may use, and only keys with that prefix). With
    `expiring_within`, only secrets that expire within it from now (issue 13), the expired too."""
    require_id("workspace_id", workspace_id)
    referenceable = referenceable_prefix is not None
    prefix = referenceable_prefix or ""
    if referenceable:
        require_id("prefix", prefix, required=False, max_length=MAX_KEY_LENGTH)
    size = paging.page_size(page_size)
    listing = REFERENCEABLE_LISTING if referenceable else SECRETS_LISTING
    window = () if expiring_within is None else (round(expiring_within.total_seconds() * 1000),)
    digest = paging.filter_digest(listing, caller.user_id, workspace_id, prefix, *window)
    expiring_before = datetime.now(UTC) + expiring_within if expiring_within is not None else None
    cursor = _secrets_cursor(page_token, listing, digest)
    async with db.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        permission = policy.require_member(
            await repo.permission_of(conn, workspace_id, caller.user_id), caller.user_id, workspace_id
        )
        rows: list[repo.SecretRow] = []
        if cursor is None or cursor[0] is Scope.WORKSPACE:
            rows = await store.secrets_after(
                conn,
                Scope.WORKSPACE,
                workspace_id,
                caller.user_id,
                cursor[1] if cursor else "",
                size + 1,
                prefix=prefix,
                usable_only=referenceable,
                caller_is_admin=policy.is_implicit_admin(permission),
                expiring_before=expiring_before,
            )
        if len(rows) <= size:
            after = cursor[1] if cursor is not None and cursor[0] is Scope.PERSONAL else ""
            rows += await store.secrets_after(
                conn,
                Scope.PERSONAL,
                caller.user_id,
                caller.user_id,
                after,
                size + 1 - len(rows),
                prefix=prefix,
                expiring_before=expiring_before,
            )
        page, more = paging.fit_page(rows, size, _secret_bytes)
        personal = [r for r in page if r.scope is Scope.PERSONAL]
        # Shadowing is decided against the workspace secrets of the same keys, whichever page
        # lists them (the rule resolution itself applies: domain/resolution.py).
        same_keys = await store.secrets_with_keys(
            conn, Scope.WORKSPACE, workspace_id, caller.user_id, [r.key for r in personal]
        )
        w_rev, p_rev = await repo.revisions(conn, workspace_id, caller.user_id)
    workspace = [r for r in page if r.scope is Scope.WORKSPACE]
    if referenceable:
        # The query kept only usable secrets; the rule itself has the last word.
        workspace = [r for r in workspace if policy.can_use_workspace_secret(permission, r.restricted, r.caller_role)]
    shadowed = shadowed_keys(permission, [r.candidate for r in same_keys], [r.candidate for r in personal])
    token = paging.encode_token(listing, digest, (int(page[-1].scope), page[-1].key)) if more else ""
    return SecretsPage(workspace, personal, shadowed, w_rev, p_rev, token)


@dataclass(frozen=True, slots=True)
class MembersPage:
    members: list[repo.MemberRow]
    next_page_token: str


def _member_bytes(row: repo.MemberRow) -> int:
    return paging.message_bytes((row.workspace_id, row.user_id, row.email))


async def members_page(db: Database, workspace_id: str, page_size: int, page_token: str) -> MembersPage:
    require_id("workspace_id", workspace_id)
    size = paging.page_size(page_size)
    digest = paging.filter_digest(MEMBERS_LISTING, workspace_id)
    after = ""
    if page_token:
        (after_id,) = paging.decode_token(page_token, MEMBERS_LISTING, digest, (str,))
        assert isinstance(after_id, str)
        # The id rule (SPEC 2.1), as for the ids a page ends at: a NUL or a lone surrogate
        # cannot even reach Postgres (it was INTERNAL).
        if id_problem("user_id", after_id) is not None:
            raise paging.bad_cursor()
        after = after_id
    async with db.connection() as conn:
        rows = await store.members_after(conn, workspace_id, after, size + 1)
    page, more = paging.fit_page(rows, size, _member_bytes)
    token = paging.encode_token(MEMBERS_LISTING, digest, (page[-1].user_id,)) if more else ""
    return MembersPage(page, token)

"""ListAuditEvents: the audit log filtered by workspace, actor (principal or user), key, action and
time range, newest first, in keyset pages on (time, id) with opaque tokens bound to the filters
(service/domain/paging.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from service.domain import paging
from service.domain.audit_filter import AuditFilter
from service.domain.errors import FieldViolation, InvalidArgument
from service.domain.keys import key_problem, require_id
from service.store.audit_log import AuditRow, list_events
from service.store.pool import Database

LISTING = "audit"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditRow]
    next_page_token: str


def micros(when: datetime) -> int:
    """Microseconds since 1970 (Postgres keeps times to the microsecond): exact, unlike a float."""
    return (when - _EPOCH) // timedelta(microseconds=1)


def _event_bytes(row: AuditRow) -> int:
    """An upper bound of the event's size in a ListAuditEvents response (a resolve event may list
    500 keys of 256 characters: about 140 KB)."""
    r = row.record
    texts = (r.principal, r.user_id, r.workspace_id, r.action, r.execution_id, r.outcome, r.detail, r.workflow_id)
    keys = sum(24 + paging.utf8_bytes(k) for k, _, _ in r.keys)
    failed = sum(16 + paging.utf8_bytes(k) for k, _ in r.failed_keys)
    return paging.message_bytes(texts) + keys + failed


def check_filter(where: AuditFilter) -> None:
    for field, value in (
        ("workspace_id", where.workspace_id),
        ("principal", where.principal),
        ("user_id", where.user_id),
        ("action", where.action),
    ):
        require_id(field, value, required=False)
    if where.key and (problem := key_problem(where.key)):
        raise InvalidArgument(f"key: {problem}", [FieldViolation("key", problem)])
    if where.start is not None and where.end is not None and where.end <= where.start:
        raise InvalidArgument(
            "end_time must be after start_time", [FieldViolation("end_time", "must be after start_time")]
        )


def _digest(where: AuditFilter) -> str:
    return paging.filter_digest(
        LISTING,
        where.workspace_id,
        where.principal,
        where.user_id,
        where.key,
        where.action,
        micros(where.start) if where.start is not None else "",
        micros(where.end) if where.end is not None else "",
    )


def _cursor(token: str, digest: str) -> tuple[datetime, int]:
    at, last_id = paging.decode_token(token, LISTING, digest, (int, int))
    assert isinstance(at, int) and isinstance(last_id, int)
    # Only what this service issues: a bigserial id and a time Python and Postgres can hold.
    if not 1 <= last_id < 2**63:
        raise paging.bad_cursor()
    try:
        when = _EPOCH + timedelta(microseconds=at)
    except OverflowError:
        raise paging.bad_cursor() from None
    if not 1 < when.year < 9999:
        raise paging.bad_cursor()
    return when, last_id


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """A checked request: its filters, page size, digest and where it continues."""

    where: AuditFilter
    size: int
    digest: str
    before: tuple[datetime, int] | None


def audit_query(where: AuditFilter, page_size: int, page_token: str) -> AuditQuery:
    """The request checked, before anything is read: INVALID_ARGUMENT for a bad filter, a negative
    page size or a token that is not this listing's."""
    check_filter(where)
    size = paging.page_size(page_size)
    digest = _digest(where)
    return AuditQuery(where, size, digest, _cursor(page_token, digest) if page_token else None)


async def audit_page(db: Database, query: AuditQuery) -> AuditPage:
    async with db.connection() as conn:
        rows = await list_events(conn, query.where, query.before, query.size + 1)
    page, more = paging.fit_page(rows, query.size, _event_bytes)
    token = paging.encode_token(LISTING, query.digest, (micros(page[-1].at), page[-1].id)) if more else ""
    return AuditPage(page, token)

"""Paging of list calls (AIP-158): page sizes, page byte budgets and opaque page tokens.

Every list call pages by keyset: the rows are ordered by a unique key, and a page continues after
the last key the previous page listed (`WHERE key > last ORDER BY key`). A listing therefore stays
consistent while writes happen between pages: no row twice, none that existed throughout skipped
(rows created after the listing passed their place are not seen). There is no offset to drift.

A page token is the cursor (that last key) in an envelope: base64url (no padding) of the compact
JSON `[1, listing, filter digest, *cursor]`. The version (1) lets the format change; the listing
name and the digest of the request's filters and caller bind the token to its listing, so a token
of one listing, or of other filters, is refused rather than silently continuing elsewhere. Tokens
are not MAC'd: a cursor only says where to continue in a listing the caller may read in full
anyway, every page applies the caller's own permissions and filters again, and so a forged cursor
can reach nothing that a real one cannot. Decoding is strict (one token per cursor: the canonical
spelling only) and every failure is INVALID_ARGUMENT naming `page_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from service.domain.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000
# A page also ends before its items' serialized size (an upper bound, see `message_bytes`) passes
# this, so that every response stays under 1 MiB whatever the page size: 1,000 secrets with the
# longest descriptions (2,000 characters of up to 4 UTF-8 bytes) would be 11 MB. At least one item
# is listed per page.
MAX_PAGE_BYTES: Final = 1_000_000
# Longer than any token this service issues (a cursor holds at most a 256-character key, or a few
# ids of up to 256 characters).
MAX_TOKEN_CHARS: Final = 4096
TOKEN_VERSION: Final = 1

Cursor = tuple[str | int, ...]
T = TypeVar("T")

_B64URL: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def page_size(requested: int) -> int:
    """The page size for a request's `page_size`: the default for 0, the maximum for anything
    larger; INVALID_ARGUMENT for a negative one."""
    if requested < 0:
        raise InvalidArgument(
            f"page_size must not be negative (0 for the default of {DEFAULT_PAGE_SIZE})",
            [FieldViolation("page_size", "must not be negative")],
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def filter_digest(listing: str, *parts: str | int) -> str:
    """What binds a token to its listing: a digest of the listing's name, the caller and the
    request's filters (anything that changes which rows the listing holds)."""
    text = json.dumps([listing, *parts], separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_token(listing: str, digest: str, cursor: Cursor) -> str:
    payload = json.dumps([TOKEN_VERSION, listing, digest, *cursor], separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _bad(reason: str) -> InvalidArgument:
    return InvalidArgument(f"page_token {reason}", [FieldViolation("page_token", reason)])


def decode_token(token: str, listing: str, digest: str, shape: Sequence[type]) -> Cursor:
    """The cursor in `token`, whose fields have the types of `shape` (str or int); raises
    InvalidArgument (naming page_token) for anything this service did not issue for this listing
    and these filters. The caller checks the cursor's values (ranges, key rules) on top."""
    if len(token) > MAX_TOKEN_CHARS or not _B64URL.issuperset(token):
        raise _bad("is not one this service issued")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise _bad("is not one this service issued") from None
    if not isinstance(payload, list) or len(payload) != 3 + len(shape) or payload[0] != TOKEN_VERSION:
        raise _bad("is not one this service issued")
    if payload[1] != listing or payload[2] != digest:
        raise _bad("belongs to another listing or to other filters: send the same request with it")
    cursor = tuple(payload[3:])
    for value, kind in zip(cursor, shape, strict=True):
        # bool is an int to Python; JSON true is not a cursor field.
        if type(value) is not kind:
            raise _bad("is not one this service issued")
    if encode_token(listing, digest, cursor) != token:
        raise _bad("is not one this service issued")
    return cursor


def bad_cursor() -> InvalidArgument:
    """For a token that decoded but whose cursor holds a value no listing could have issued."""
    return _bad("is not one this service issued")


def utf8_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def message_bytes(texts: Sequence[str], overhead: int = 96) -> int:
    """An upper bound of one listed item's serialized size: its texts in UTF-8 with a tag and a
    length prefix each, and `overhead` for its numbers, times, flags and its own tag and length."""
    return overhead + sum(5 + utf8_bytes(t) for t in texts)


def fit_page(items: Sequence[T], size: int, item_bytes: Callable[[T], int]) -> tuple[list[T], bool]:
    """The items of one page, from `items` fetched as size + 1 rows: at most `size` of them, and
    fewer when their bytes would pass MAX_PAGE_BYTES (but at least one). The flag says whether
    rows remain after the page (whether it needs a next_page_token)."""
    total = 0
    for i, item in enumerate(items[:size]):
        total += item_bytes(item)
        if total > MAX_PAGE_BYTES and i > 0:
            return list(items[:i]), True
    return list(items[:size]), len(items) > size

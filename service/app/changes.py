"""The write wrapper for changes that resolves could read: one transaction that, on commit,
notifies every replica (service/store/notify.py) and then drops this replica's resolve-cache
entries (service/app/cache.py) before the call returns.

It owns only that order (write, notify inside the transaction, invalidate locally after commit);
it never decides which tags a change touches (the use case passes them), never writes a row of
its own, and never listens.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from service.app.cache import ResolveCache
from service.store.notify import notify
from service.store.pool import Database


class Changes:
    """Transactions that change what resolves read: they notify every replica on commit and
    drop this replica's entries right after."""

    def __init__(self, db: Database, cache: ResolveCache[Any]) -> None:
        self._db = db
        self._cache = cache

    @contextlib.asynccontextmanager
    async def transaction(self, *tags: str) -> AsyncIterator[asyncpg.Connection]:
        async with self._db.transaction() as conn:
            yield conn
            await notify(conn, tags)
        self._cache.invalidate(tags)

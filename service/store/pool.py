"""The asyncpg connection pool: connecting, lending connections and transactions, `ping`, the
errors that mean "the database is not there right now" (turned into `Unavailable` here, in one
place), and the deadline of the call being served, which bounds the wait for a connection.

It never knows a table or a query of its own (beyond `SELECT 1`), never sets session state on a
pooled connection, and leaves the schema to `migrations.py` and development databases to
`embedded.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg

from service.calls import call_deadline
from service.domain.errors import Aborted, AlreadyExists, Unavailable
from service.store.migrations import migrate

# Errors that mean "the database is not there right now", as opposed to a bug in a query.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    # A connection whose server went away mid-protocol ("protocol is in the failed state").
    asyncpg.exceptions.InternalClientError,
)
# The same, plus the domain error that `Database.connection` turns them into.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (Unavailable, *CONNECTION_ERRORS)
# Serialization failures and deadlocks: the transaction was rolled back whole and can be retried.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.LockNotAvailableError,
)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's default release-time reset (`RESET ALL; UNLISTEN *; ...`), which costs a
    database round trip on every release, so one per resolve. This service sets no session
    state on pooled connections: no SET, no LISTEN (the invalidation listener has a connection of
    its own), and its only advisory lock is transaction-scoped. asyncpg still ends any open
    transaction before calling this."""


class Database:
    """The asyncpg pool, with connection failures mapped to `Unavailable` in one place."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 10, timeout: float = 5.0) -> Database:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            command_timeout=30,
            max_inactive_connection_lifetime=300,
            reset=_keep_session,
        )
        return cls(pool, url)

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float = 5.0) -> AsyncIterator[asyncpg.Connection]:
        deadline = call_deadline.get()
        if deadline is not None:
            # Waiting for a connection past the caller's deadline helps nobody; give up before it
            # so the caller gets UNAVAILABLE (retryable), not DEADLINE_EXCEEDED.
            timeout = max(0.01, min(timeout, deadline - time.monotonic() - 0.05))
        try:
            async with self.pool.acquire(timeout=timeout) as conn:
                try:
                    yield conn
                except CONNECTION_ERRORS:
                    # The server side is gone: close it here, so the pool drops it instead of
                    # trying to reset (and complaining about) a connection with no server.
                    conn.terminate()
                    raise
        # What the database says about a call is the caller's to retry or fix, never INTERNAL; it
        # leaves the store as a domain error. The messages are ours: the database's own may quote
        # the row it refused.
        except CONNECTION_ERRORS as exc:
            raise Unavailable(f"the database is unavailable ({type(exc).__name__}); retry shortly") from exc
        except RETRYABLE_ERRORS as exc:
            raise Aborted("the call conflicted with a concurrent change; retry it") from exc
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists("it already exists (a concurrent call created it)") from exc
        except asyncpg.QueryCanceledError as exc:
            raise Unavailable("the database took too long; retry shortly") from exc

    @contextlib.asynccontextmanager
    async def transaction(self, timeout: float = 5.0) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection(timeout) as conn, conn.transaction():
            yield conn

    async def ping(self, timeout: float = 2.0) -> bool:
        """Whether the database answers right now. Never raises (cancellation aside): any failure
        means "not reachable", not only connection errors. A database that refuses this service
        ("database does not exist", a rejected password, "not accepting connections") is as
        unreachable as one that is down, and the health watcher must outlive both.

        Leaves why in `ping_problem` ("" when it answered), fit for a log line: the exception's
        type, and the server's own message when Postgres refused us (it names a database or a
        role, never a value)."""
        try:
            async with self.connection(timeout) as conn:
                await conn.fetchval("SELECT 1", timeout=timeout)
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, Unavailable) and exc.__cause__ is not None else exc
            self.ping_problem = type(cause).__name__
            if isinstance(cause, asyncpg.PostgresError):
                self.ping_problem += ": " + " ".join(str(cause).split())
            return False
        self.ping_problem = ""
        return True

    async def migrate(self) -> list[int]:
        async with self.connection(timeout=30) as conn:
            return await migrate(conn)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), timeout=5)

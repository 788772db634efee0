"""An in-memory cache of what a resolve reads from Postgres (membership and sealed rows), kept
coherent across replicas with Postgres LISTEN/NOTIFY.

Every transaction that changes what a resolve could read sends `NOTIFY secrets_changed, '<tag>'`
(tags: `w:<workspace>` and `u:<user>`), delivered to every replica when it commits. Each replica
listens on a connection of its own and drops the entries carrying that tag; the replica that made
the change drops them at once, before its call returns.

What it costs: a resolve on another replica may see the previous state for the moment the
notification is in flight (sub-millisecond on one host). Guards: entries are only stored if no
invalidation happened while they were being read (no stale refill); they expire after `ttl`
seconds whatever happens; and while the listener is disconnected the cache is cleared and not
used at all, so a lost notification can never leave a stale entry behind.

Only sealed bytes are cached, never a value: values are opened per resolve.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import asyncpg

from service.domain.model import Scope
from service.store.pool import Database

log = logging.getLogger(__name__)

CHANNEL = "secrets_changed"


def workspace_tag(workspace_id: str) -> str:
    return f"w:{workspace_id}"


def user_tag(user_id: str) -> str:
    return f"u:{user_id}"


T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    plan: T
    tags: tuple[str, ...]
    expires: float
    size: int


class ResolveCache(Generic[T]):
    """What resolves read, per (workspace, run user, keys); see the module docstring."""

    def __init__(self, max_entries: int = 10_000, ttl: float = 30.0, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        # Bounded in bytes as well as entries: one plan can hold hundreds of 64 KiB values, and the
        # server must stay small (the benchmark checks its peak memory).
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str, tuple[str, ...]], _Entry[T]] = OrderedDict()
        self._by_tag: dict[str, set[tuple[str, str, tuple[str, ...]]]] = {}
        # Bumped by every invalidation: a read that started before a bump must not be stored.
        self.epoch = 0
        self.enabled = False  # until the listener is connected
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(workspace_id: str, run_user_id: str, keys: Iterable[str]) -> tuple[str, str, tuple[str, ...]]:
        return (workspace_id, run_user_id, tuple(sorted(keys)))

    def get(self, key: tuple[str, str, tuple[str, ...]]) -> T | None:
        if not self.enabled:
            return None
        entry = self._entries.get(key)
        if entry is None or entry.expires < time.monotonic():
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.plan

    def put(self, key: tuple[str, str, tuple[str, ...]], plan: T, read_epoch: int, size: int = 0) -> None:
        """Stores a plan of about `size` bytes, unless an invalidation happened since the read
        began (`read_epoch`) or the plan alone would take more than a sixteenth of the budget."""
        if not self.enabled or read_epoch != self.epoch or size > self.max_bytes // 16:
            return
        tags = (workspace_tag(key[0]), user_tag(key[1]))
        self._drop(key)
        self._entries[key] = _Entry(plan, tags, time.monotonic() + self.ttl, size)
        self.bytes += size
        for tag in tags:
            self._by_tag.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: tuple[str, str, tuple[str, ...]]) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry.size
        for tag in entry.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]

    def invalidate(self, tags: Iterable[str]) -> None:
        self.epoch += 1
        for tag in tags:
            for key in list(self._by_tag.get(tag, ())):
                self._drop(key)

    def clear(self) -> None:
        self.epoch += 1
        self._entries.clear()
        self._by_tag.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


class Follower(Protocol):
    """Something else kept current by the same notifications (the stopped run grants)."""

    def listening(self) -> None: ...  # (re)connected: anything before may have been missed
    def changed(self, tags: list[str]) -> None: ...
    def lost(self) -> None: ...  # disconnected: notifications may be missed from now on


class Invalidations:
    """Listens for change notifications on a dedicated connection and applies them to the cache;
    reconnects with backoff, and keeps the cache off while it cannot listen."""

    def __init__(self, url: str, cache: ResolveCache[Any]) -> None:
        self._url = url
        self._cache = cache
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.followers: list[Follower] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cache-invalidations")

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        tags = decode_tags(payload)
        if tags is None:
            # Not a payload this service sent: drop everything rather than guess which entries
            # it meant (failing closed costs one round trip per resolve until they refill).
            log.error("cache invalidation with an unreadable payload; clearing the resolve cache")
            self._cache.clear()
            for follower in self.followers:
                follower.listening()  # start over from the database
            return
        self._cache.invalidate(tags)
        for follower in self.followers:
            follower.changed(tags)

    def _on_terminate(self, conn: Any) -> None:
        self._cache.enabled = False
        self._cache.clear()
        for follower in self.followers:
            follower.lost()
        self._lost.set()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._url, timeout=5)
                self._lost.clear()
                conn.add_termination_listener(self._on_terminate)
                await conn.add_listener(CHANNEL, self._on_notify)
                # Anything cached before listening could have missed a notification.
                self._cache.clear()
                self._cache.enabled = True
                for follower in self.followers:
                    follower.listening()
                delay = 0.2
                # A listening connection gets no traffic of its own; poll it so that a dead
                # server is noticed even when nothing is being changed.
                while not self._lost.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), timeout=2.0)
                    if not self._lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=2.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("invalidation listener down: %s", type(exc).__name__)
            finally:
                self._cache.enabled = False
                self._cache.clear()
                for follower in self.followers:
                    follower.lost()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=1)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def notify(conn: asyncpg.Connection, tags: Iterable[str]) -> None:
    """Queues a change notification inside the caller's transaction; Postgres delivers it to
    every listener when (and only if) the transaction commits."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, encode_tags(tags))


def encode_tags(tags: Iterable[str]) -> str:
    """The notification payload: a JSON array, because ids may hold any character a separator
    could be (a comma-joined list split `w:a,b` into `w:a` and `b`, and the member removed from
    workspace `a,b` kept resolving until the entry expired)."""
    return json.dumps(sorted(set(tags)))


def decode_tags(payload: str) -> list[str] | None:
    try:
        tags = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None
    return tags


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


def scope_tag(scope: Scope, owner_id: str) -> str:
    return workspace_tag(owner_id) if scope is Scope.WORKSPACE else user_tag(owner_id)

"""The change notifications between replicas: Postgres LISTEN/NOTIFY on the channel
`secrets_changed`, whose payload is a JSON array of tags.

A transaction that changes what another replica may hold in memory calls `notify` inside it;
Postgres delivers the tags to every listener when (and only if) it commits. `Invalidations` is
the listener: one connection of its own (never a pooled one), reconnecting with backoff, polled
so that a dead server is noticed. It hands each notification to a cache (`Cache`: dropped by
tag, cleared and switched off while notifications may be missed) and then to its followers
(`Follower`: told when it starts listening, what changed, and when it stops).

It owns the channel, the payload's encoding and the listening connection; it never knows what a
tag means, what the cache or a follower holds, or which writes must notify (the use cases and
`service/app/changes.py` decide that), and it imports nothing above the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "secrets_changed"


class Cache(Protocol):
    """What the listener keeps coherent first (the resolve cache): `enabled` only while listening,
    entries dropped by tag, everything dropped when a notification may have been missed."""

    enabled: bool

    def invalidate(self, tags: Iterable[str]) -> None: ...
    def clear(self) -> None: ...


class Follower(Protocol):
    """Something else kept current by the same notifications (the stopped run grants)."""

    def listening(self) -> None: ...  # (re)connected: anything before may have been missed
    def changed(self, tags: list[str]) -> None: ...
    def lost(self) -> None: ...  # disconnected: notifications may be missed from now on


class Invalidations:
    """Listens for change notifications on a dedicated connection and applies them to the cache;
    reconnects with backoff, and keeps the cache off while it cannot listen."""

    def __init__(self, url: str, cache: Cache) -> None:
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

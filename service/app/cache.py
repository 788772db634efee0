"""An in-memory cache of what a resolve reads from Postgres (membership and sealed rows), kept
coherent across replicas by the change notifications of service/store/notify.py.

Every transaction that changes what a resolve could read notifies its tags (`w:<workspace>` and
`u:<user>`; `Changes` in service/app/changes.py), delivered to every replica when it commits. Each
replica's listener (`store.notify.Invalidations`) drops the entries carrying that tag; the replica
that made the change drops them at once, before its call returns.

What it costs: a resolve on another replica may see the previous state for the moment the
notification is in flight (sub-millisecond on one host). Guards: entries are only stored if no
invalidation happened while they were being read (no stale refill); they expire after `ttl`
seconds whatever happens; and while the listener is disconnected the cache is cleared and not
used at all, so a lost notification can never leave a stale entry behind.

This module owns the entries and the tag names; it never talks to Postgres (no connection, no
LISTEN, no NOTIFY) and never decides which writes invalidate what.

Only sealed bytes are cached, never a value: values are opened per resolve.

An entry can carry attachments (`Kept`): what the layers above derive from exactly that entry
and nothing else (the response frames of service/api/fastpath.py, the audit event's key list).
They live and die with the entry, so every invalidation drops them too, and their sizes count in
the entry's size and the cache's byte budget. They hold no value either.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from service.domain.model import Scope


def workspace_tag(workspace_id: str) -> str:
    return f"w:{workspace_id}"


def user_tag(user_id: str) -> str:
    return f"u:{user_id}"


T = TypeVar("T")


# Attachments one entry may carry: at most this many, and in all at most the size a single entry
# may have (a sixteenth of the cache's bytes). Past either, the entry's attachments start over.
MAX_ATTACHMENTS: Final = 64

CacheKey = tuple[str, str, tuple[str, ...]]


@dataclass(slots=True)
class _Entry(Generic[T]):
    plan: T
    tags: tuple[str, ...]
    expires: float
    size: int
    # name -> (attachment, its size in bytes); see the module docstring.
    attached: dict[Hashable, tuple[object, int]] | None = None


class Kept(Generic[T]):
    """One entry as a resolve found it: its plan, and its attachments, which `attach` adds only
    while the entry is still the cache's (an entry dropped meanwhile takes nothing more)."""

    __slots__ = ("_cache", "_entry", "_key")

    def __init__(self, cache: ResolveCache[T], key: CacheKey, entry: _Entry[T]) -> None:
        self._cache = cache
        self._key = key
        self._entry = entry

    @property
    def plan(self) -> T:
        return self._entry.plan

    def attachment(self, name: Hashable) -> object | None:
        attached = self._entry.attached
        if attached is None:
            return None
        found = attached.get(name)
        return found[0] if found is not None else None

    def attach(self, name: Hashable, value: object, size: int) -> bool:
        return self._cache.attach(self._key, self._entry, name, value, size)


class ResolveCache(Generic[T]):
    """What resolves read, per (workspace, run user, keys); see the module docstring."""

    def __init__(self, max_entries: int = 10_000, ttl: float = 30.0, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        # Bounded in bytes as well as entries: one plan can hold hundreds of 64 KiB values, and the
        # server must stay small (the benchmark checks its peak memory).
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[CacheKey, _Entry[T]] = OrderedDict()
        self._by_tag: dict[str, set[CacheKey]] = {}
        # Bumped by every invalidation: a read that started before a bump must not be stored.
        self.epoch = 0
        self.enabled = False  # until the listener is connected
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(workspace_id: str, run_user_id: str, keys: Iterable[str]) -> CacheKey:
        return (workspace_id, run_user_id, tuple(sorted(keys)))

    def get(self, key: CacheKey) -> T | None:
        if not self.enabled:
            return None
        entry = self._entries.get(key)
        if entry is None or entry.expires < time.monotonic():
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.plan

    def kept(self, key: CacheKey, counted: bool = True) -> Kept[T] | None:
        """`get`, with the entry's attachments. `counted=False`: a look that is not a resolve of
        its own (the fast path's, which counts its hit only when it serves: a resolve it hands
        to the ordinary path is counted there, once)."""
        if not self.enabled:
            return None
        entry = self._entries.get(key)
        if entry is None or entry.expires < time.monotonic():
            if counted:
                self.misses += 1
            return None
        self._entries.move_to_end(key)
        if counted:
            self.hits += 1
        return Kept(self, key, entry)

    def attach(self, key: CacheKey, entry: _Entry[T], name: Hashable, value: object, size: int) -> bool:
        """Attaches `value` (about `size` bytes) to `entry` under `name`, if the entry is still
        the one cached under `key`; counted in its size and in the cache's bytes. An entry whose
        attachments would pass MAX_ATTACHMENTS or a sixteenth of the budget drops them first; an
        attachment larger than that alone is not kept."""
        if not self.enabled or self._entries.get(key) is not entry:
            return False
        limit = self.max_bytes // 16
        if size > limit:
            return False
        attached = entry.attached
        if attached is None:
            attached = entry.attached = {}
        previous = attached.pop(name, None)
        if previous is not None:
            entry.size -= previous[1]
            self.bytes -= previous[1]
        if len(attached) >= MAX_ATTACHMENTS or entry.size + size > limit:
            dropped = sum(s for _, s in attached.values())
            attached.clear()
            entry.size -= dropped
            self.bytes -= dropped
            if entry.size + size > limit:
                return False
        attached[name] = (value, size)
        entry.size += size
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            oldest = next(iter(self._entries))
            if oldest == key:
                break
            self._drop(oldest)
        return True

    def put(self, key: CacheKey, plan: T, read_epoch: int, size: int = 0, ttl: float | None = None) -> Kept[T] | None:
        """Stores a plan of about `size` bytes, unless an invalidation happened since the read
        began (`read_epoch`) or the plan alone would take more than a sixteenth of the budget.
        `ttl` shortens the entry's life below the cache's own (a secret in it expires sooner).
        Returns the entry stored (None when it was not)."""
        if not self.enabled or read_epoch != self.epoch or size > self.max_bytes // 16:
            return None
        if ttl is not None and ttl <= 0:
            return None
        tags = (workspace_tag(key[0]), user_tag(key[1]))
        self._drop(key)
        lifetime = self.ttl if ttl is None else min(self.ttl, ttl)
        entry = self._entries[key] = _Entry(plan, tags, time.monotonic() + lifetime, size)
        self.bytes += size
        for tag in tags:
            self._by_tag.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        return Kept(self, key, entry) if self._entries.get(key) is entry else None

    def _drop(self, key: CacheKey) -> None:
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


def scope_tag(scope: Scope, owner_id: str) -> str:
    return workspace_tag(owner_id) if scope is Scope.WORKSPACE else user_tag(owner_id)

"""Per-tenant data keys: created on first use, unwrapped once, cached in memory.

Data keys are immutable once stored (rotation re-wraps them; the key bytes stay the same), so a
cached key never goes stale and every replica can cache independently.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as pysecrets
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from service.crypto.aead import KEY_BYTES, Aead, IntegrityError
from service.crypto.envelope import DataKey, Prepared, open_prepared, prepare
from service.crypto.keyring import Keyring, KeyringError
from service.domain.errors import DataLoss
from service.domain.model import Scope, Tenant
from service.domain.values import SecretValue
from service.store import repository as repo
from service.store.db import Database
from service.watched import WatchedFile

log = logging.getLogger(__name__)


def keyring_source(path: Path | None, keyring: Keyring) -> WatchedFile[Keyring]:
    """The keyring, re-read when its file changes, so an operator can add a key and make it
    primary without a restart (then call RotateKeys). Looked at whenever a data key is created
    or unwrapped, which is rare, so on every use."""
    return WatchedFile("keyring", path, keyring, Keyring.load, (KeyringError,))


@dataclass(frozen=True, slots=True)
class _Entry:
    latest: DataKey
    by_generation: dict[int, DataKey]


class DataKeys:
    def __init__(self, db: Database, keyring: WatchedFile[Keyring], max_tenants: int = 100_000) -> None:
        self._db = db
        self.keyring = keyring
        # Bounded (oldest loaded first out): a few hundred bytes per tenant, and a busy service
        # sees many users' personal tenants. An evicted key is simply unwrapped again.
        self._max_tenants = max_tenants
        self._cache: OrderedDict[Tenant, _Entry] = OrderedDict()
        self._locks: dict[Tenant, asyncio.Lock] = {}

    def has(self, tenant: Tenant) -> bool:
        return tenant in self._cache

    def cached(self, tenant: Tenant, generation: int) -> DataKey | None:
        entry = self._cache.get(tenant)
        return entry.by_generation.get(generation) if entry else None

    def _unwrap(self, row: repo.WrappedDataKey) -> DataKey:
        try:
            material = self.keyring.current().unwrap(str(row.tenant), row.wrapped)
        except IntegrityError:
            raise DataLoss(
                f"the data key of {row.tenant.kind.name.lower()} {row.tenant.id!r} failed authentication; "
                "it was altered or moved from another tenant"
            ) from None
        return DataKey(row.tenant, row.generation, Aead(material))

    def _remember(self, rows: list[repo.WrappedDataKey]) -> None:
        by_tenant: dict[Tenant, list[repo.WrappedDataKey]] = {}
        for row in rows:
            by_tenant.setdefault(row.tenant, []).append(row)
        for tenant, tenant_rows in by_tenant.items():
            keys = {r.generation: self._unwrap(r) for r in tenant_rows}
            self._cache[tenant] = _Entry(keys[max(keys)], keys)
        while len(self._cache) > self._max_tenants:
            self._cache.popitem(last=False)

    async def load(self, tenants: list[Tenant]) -> None:
        """Loads and unwraps the data keys of tenants not yet cached, in one query."""
        missing = [t for t in dict.fromkeys(tenants) if t not in self._cache]
        if missing:
            async with self._db.connection() as conn:
                rows = await repo.data_keys_for(conn, missing)
            self._remember(rows)

    async def for_opening(self, tenant: Tenant, generation: int) -> DataKey:
        key = self.cached(tenant, generation)
        if key is None:
            self._cache.pop(tenant, None)
            await self.load([tenant])
            key = self.cached(tenant, generation)
            if key is None:
                raise DataLoss(
                    f"a sealed value names data key generation {generation} of {tenant}, which does not exist"
                )
        return key

    async def for_sealing(self, tenant: Tenant) -> DataKey:
        """The tenant's current data key, created (and committed) on first use.

        Creation commits on its own before any save uses the key: a key that only lived in a
        rolled-back transaction must never have sealed anything that a later retry stores.
        """
        entry = self._cache.get(tenant)
        if entry is not None:
            return entry.latest
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            await self.load([tenant])
            entry = self._cache.get(tenant)
            if entry is not None:
                return entry.latest
            keyring = self.keyring.current()
            material = pysecrets.token_bytes(KEY_BYTES)
            candidate = repo.WrappedDataKey(tenant, 1, keyring.primary_id, keyring.wrap(str(tenant), material))
            async with self._db.connection() as conn:
                stored = await repo.insert_data_key(conn, candidate)
            # Another replica may have created it first: use whatever is stored.
            self._remember([stored])
            self._locks.pop(tenant, None)
            return self._cache[tenant].latest

    async def open(self, tenant: Tenant, scope: Scope, key: str, version: int, sealed: bytes) -> SecretValue:
        """Opens a sealed value; any failure is DataLoss naming the secret (never its value)."""
        try:
            prepared = prepare(tenant, scope, key, version, sealed)
        except IntegrityError:
            raise data_loss(key, version) from None
        return await self.open_prepared(tenant, key, version, prepared)

    async def open_prepared(self, tenant: Tenant, key: str, version: int, prepared: Prepared) -> SecretValue:
        """`open` for a value already taken apart (the resolve cache keeps them so)."""
        data_key = self.cached(tenant, prepared.generation)
        if data_key is None:
            data_key = await self.for_opening(tenant, prepared.generation)
        try:
            return open_prepared(data_key, prepared)
        except IntegrityError:
            raise data_loss(key, version) from None


def data_loss(key: str, version: int) -> DataLoss:
    """The error for a sealed value that failed to open: names the secret, never shows a value."""
    return DataLoss(f"secret {key!r} version {version} failed authentication: its sealed value was altered or moved")

"""Per-tenant data keys: created on first use, unwrapped once, cached in memory.

Data keys are immutable once stored (rotation re-wraps them; the key bytes stay the same), so a
cached key never goes stale and every replica can cache independently. Data-key rotation
(Operations/RotateDataKeys) adds a newer generation and later deletes the older ones: it announces
both with the tenant's key tag (`key_tag`), on which every replica drops the tenant from its cache
(reloaded on next use), and a save checks its sealing key against the database under its scope's
revision lock (`confirm_sealing`), so no value is ever sealed under a generation being destroyed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as pysecrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg

from service.config import ConfigError
from service.crypto.aead import KEY_BYTES, Aead, IntegrityError
from service.crypto.envelope import DataKey, SealedParts, open_parts, split_sealed
from service.crypto.keyring import Keyring, KeyringError, UnknownMasterKey, stranded
from service.domain.errors import DataLoss, FailedPrecondition
from service.domain.model import Scope, Tenant, TenantKind
from service.domain.values import SecretValue
from service.store import datakeys, keychecks
from service.store import repository as repo
from service.store.pool import Database
from service.watched import WatchedFile

log = logging.getLogger(__name__)


class KeyUse:
    """What any keyring must keep able to open (SPEC 4.2), as this process last learned it: how
    many data keys each master key id wraps, and the check value recorded for each key id. Read
    from the database at start-up and after RotateKeys, and kept up to date by this process's own
    data-key creation; so the reload check is synchronous and costs no query."""

    def __init__(self) -> None:
        self.in_use: dict[str, int] | None = None  # None until read from the database
        self.recorded: dict[str, bytes] = {}
        self.version = 0  # bumped on every change, so answers cached from the old state are dropped
        # Reads the counts and check values again (set by DataKeys, which has the database).
        self.refresh: Callable[[], Awaitable[None]] | None = None

    def learn(self, in_use: dict[str, int], recorded: dict[str, bytes]) -> None:
        self.in_use = in_use
        self.recorded = recorded
        self.version += 1

    def note_recorded(self, recorded: dict[str, bytes]) -> None:
        self.recorded = recorded
        self.version += 1

    def count(self, key_id: str) -> None:
        """One more data key is wrapped under `key_id` (nothing changes before start-up has read
        the database: until then nothing counts as usable anyway)."""
        if self.in_use is not None:
            self.in_use = {**self.in_use, key_id: self.in_use.get(key_id, 0) + 1}
            self.version += 1


class KeyringFile(WatchedFile[Keyring]):
    """The keyring, re-read when its file changes, so an operator can add a key and make it
    primary without a restart (then call RotateKeys). Looked at whenever a data key is created
    or unwrapped, which is rare, so on every use.

    A changed file that would strand data keys is refused (logged at ERROR; the keys already
    loaded keep serving): one that drops a key data keys use, or the serving primary (any
    replica may wrap a new data key under it at any moment), or changes the material under a
    known key id. Counts of data keys are this process's last reading (`KeyUse`); after a refusal
    they are read again, and a file refused only for a stale count (RotateKeys ran on another
    replica) is then loaded."""

    def __init__(self, path: Path | None, keyring: Keyring) -> None:
        self.use = KeyUse()
        self._serving = keyring
        self._rechecks: set[asyncio.Task[None]] = set()
        super().__init__("keyring", path, keyring, Keyring.load, (KeyringError,), accept=self._accept)

    def _accept(self, keyring: Keyring) -> None:
        problem = stranded(keyring, self.use.in_use or {}, self.use.recorded, self._serving)
        if problem:
            self._recheck_later(keyring)
            raise KeyringError(f"refused: {problem.describe()}")
        self._serving = keyring  # WatchedFile takes the value once `accept` returns

    def _recheck_later(self, refused: Keyring) -> None:
        if self.use.refresh is None or self.use.in_use is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._recheck(refused), name="keyring-recheck")
        except RuntimeError:
            return  # no event loop (a tool or a synchronous test): nothing to refresh with
        self._rechecks.add(task)
        task.add_done_callback(self._rechecks.discard)

    async def _recheck(self, refused: Keyring) -> None:
        refresh = self.use.refresh
        if refresh is None:
            return
        try:
            await refresh()
        except Exception as exc:
            log.warning("cannot re-read the data keys in use after a refused keyring: %s", type(exc).__name__)
            return
        if not stranded(refused, self.use.in_use or {}, self.use.recorded, self._serving):
            log.warning(
                "the refused keyring strands no data key by the database's current counts "
                "(RotateKeys ran elsewhere since this server last counted); loading it"
            )
            self.reread()


def keyring_source(path: Path | None, keyring: Keyring) -> KeyringFile:
    return KeyringFile(path, keyring)


def key_tag(tenant: Tenant) -> str:
    """The change-notification tag (service/store/notify.py) that says a tenant's data keys changed."""
    return f"k:{tenant}"


def _tenant_of_tag(tag: str) -> Tenant | None:
    kind, _, tenant_id = tag.removeprefix("k:").partition(":")
    if not tag.startswith("k:") or kind not in ("w", "u"):
        return None
    return Tenant(TenantKind(kind), tenant_id)


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
        # The key of the fast path's packs (`pack`): made here, never stored or shown.
        self._pack_aead = Aead(pysecrets.token_bytes(KEY_BYTES))
        self._pack_generation = 0
        self._packs_sealed = 0
        # A plain WatchedFile (tests) gets no reload check, but `usable` still works.
        self._use = keyring.use if isinstance(keyring, KeyringFile) else KeyUse()
        self._use.refresh = self.refresh_use
        self._judged: tuple[Keyring, int] | None = None
        self._usable = False

    def usable(self) -> bool:
        """Whether the current keyring can open every data key in use: it holds every master key
        id that data keys are wrapped under, with the recorded check values. False until start-up
        has read the database. Cheap (a stat of the keyring file; the answer is recomputed only
        when the keyring or what is known of the database changed) and never raises."""
        try:
            keyring = self.keyring.current()
            judged = (keyring, self._use.version)
            if self._judged is None or self._judged[0] is not keyring or self._judged[1] != judged[1]:
                in_use = self._use.in_use
                self._usable = in_use is not None and not stranded(keyring, in_use, self._use.recorded)
                self._judged = judged
            return self._usable
        except Exception:
            log.exception("cannot tell whether the keyring opens every data key; saying it does not")
            return False

    async def verify_keyring(self) -> None:
        """The start-up check (see `verify_keyring`), for a DataKeys built on its own."""
        await verify_keyring(self._db, self.keyring, self._use)

    async def refresh_use(self) -> None:
        """Re-reads which master keys data keys use, and the check values (after RotateKeys)."""
        async with self._db.connection() as conn:
            in_use = await repo.count_data_keys_by_master(conn)
            recorded = await keychecks.check_values(conn)
        self._use.learn(in_use, recorded)

    async def record_key(self, keyring: Keyring, key_id: str) -> None:
        """Makes sure the check value of `key_id` is recorded before it wraps a data key, and that
        a recorded one matches (FailedPrecondition if not: the id was recorded with other material)."""
        mine = keyring.check_values[key_id]
        if self._use.recorded.get(key_id) == mine:
            return
        async with self._db.transaction() as conn:
            await keychecks.record_check_values(conn, {key_id: mine})
            recorded = await keychecks.check_values(conn)
        self._use.note_recorded(recorded)
        if recorded.get(key_id) != mine:
            raise FailedPrecondition(
                f"master key {key_id!r} in the keyring file is not the key this database recorded under that id; "
                "restore the keyring file (never change a key's material under the same id)"
            )

    def has(self, tenant: Tenant) -> bool:
        return tenant in self._cache

    def cached(self, tenant: Tenant, generation: int) -> DataKey | None:
        entry = self._cache.get(tenant)
        return entry.by_generation.get(generation) if entry else None

    def forget(self, tenant: Tenant) -> None:
        """Drops the tenant's cached keys (its generations changed); reloaded on next use."""
        self._cache.pop(tenant, None)

    # A follower of the change notifications (service/store/notify.py Follower; server.py wires it),
    # so a data-key rotation on another replica reaches this cache.

    def changed(self, tags: Sequence[str]) -> None:
        """A tenant's key tag drops its keys (a generation was added or destroyed)."""
        for tag in tags:
            tenant = _tenant_of_tag(tag)
            if tenant is not None:
                self._cache.pop(tenant, None)

    def listening(self) -> None:
        """(Re)connected: a destroyed generation may have been missed meanwhile; drop them all."""
        self._cache.clear()

    def lost(self) -> None:
        """Disconnected: nothing to do. A stale key is never used to seal (`confirm_sealing`), and
        opening names its generation."""

    async def confirm_sealing(self, conn: asyncpg.Connection, data_key: DataKey) -> DataKey:
        """The key a save seals with, checked on the save's connection while it holds its scope's
        revision lock: `for_sealing` answers from the cache, before the lock, and a data-key
        rotation may have added a generation since (and, holding the same lock, may be about to
        destroy the old one). One indexed read per save."""
        latest = await datakeys.latest_generation(conn, data_key.tenant)
        if latest == data_key.generation:
            return data_key
        self.forget(data_key.tenant)
        self._remember(await repo.data_keys_for(conn, [data_key.tenant]))
        entry = self._cache.get(data_key.tenant)
        if entry is None:
            raise FailedPrecondition(f"the data keys of {data_key.tenant} are gone; retry the call")
        return entry.latest

    async def add_generation(self, tenant: Tenant) -> tuple[int, DataKey] | None:
        """Creates (and commits) the tenant's next data key generation, wrapped under the primary
        master key; returns the previous newest generation and the new key, or None when the
        tenant has no data key at all (nothing was ever sealed for it). FailedPrecondition when a
        concurrent rotation took the same generation number."""
        keyring = self.keyring.current()
        await self.record_key(keyring, keyring.primary_id)
        async with self._db.connection() as conn:
            latest = await datakeys.latest_generation(conn, tenant)
            if latest is None:
                return None
            material = pysecrets.token_bytes(KEY_BYTES)
            row = repo.WrappedDataKey(tenant, latest + 1, keyring.primary_id, keyring.wrap(str(tenant), material))
            if not await datakeys.insert_generation(conn, row):
                raise FailedPrecondition(f"another data-key rotation of {tenant} is running; retry later")
        self._use.count(row.master_key_id)
        self.forget(tenant)
        return latest, DataKey(tenant, row.generation, Aead(material))

    def _unwrap(self, row: repo.WrappedDataKey) -> DataKey:
        try:
            material = self.keyring.current().unwrap(str(row.tenant), row.wrapped)
        except UnknownMasterKey as exc:
            # Data keys use a master key this process did not know of (another replica's keyring):
            # health must not say SERVING while they cannot be opened.
            if (self._use.in_use or {}).get(exc.key_id, 0) == 0:
                self._use.count(exc.key_id)
            raise
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
            await self.record_key(keyring, keyring.primary_id)
            material = pysecrets.token_bytes(KEY_BYTES)
            candidate = repo.WrappedDataKey(tenant, 1, keyring.primary_id, keyring.wrap(str(tenant), material))
            async with self._db.connection() as conn:
                stored = await repo.insert_data_key(conn, candidate)
            self._use.count(stored.master_key_id)
            # Another replica may have created it first: use whatever is stored.
            self._remember([stored])
            self._locks.pop(tenant, None)
            return self._cache[tenant].latest

    async def open(
        self, tenant: Tenant, scope: Scope, key: str, version: int, secret_id: int, sealed: bytes
    ) -> SecretValue:
        """Opens a sealed value; any failure is DataLoss naming the secret (never its value)."""
        try:
            prepared = split_sealed(tenant, scope, key, version, secret_id, sealed)
        except IntegrityError:
            raise data_loss(key, version) from None
        return await self.open_parts(tenant, key, version, prepared)

    def open_batch(self, batch: SealedBatch) -> list[bytes] | None:
        """The plaintexts of a batch, as the UTF-8 bytes they were sealed from, in its order, when
        every data key it needs is in memory; None when one is not. DataLoss as `open_parts`.
        For the fast path of a resolve (service/app/resolver.py open_framed): the values of a
        resolve-cache entry, which `open_parts` opened (and checked) when the entry first served."""
        opened: list[bytes] = [b""] * len(batch.names)
        for tenant, generation, positions, parts in batch.groups:
            data_key = self.cached(tenant, generation)
            if data_key is None:
                return None
            try:
                plaintexts = data_key.aead.decrypt_many(parts)
            except IntegrityError:
                for position, (nonce, body, ad) in zip(positions, parts, strict=True):
                    try:
                        data_key.aead.decrypt_split(nonce, body, ad)
                    except IntegrityError:
                        raise data_loss(*batch.names[position]) from None
                raise
            for position, plaintext in zip(positions, plaintexts, strict=True):
                opened[position] = plaintext
        return opened

    def pack(self, batch: SealedBatch, values: Sequence[bytes]) -> PackedBatch | None:
        """The opened `values` of `batch` (in its order), sealed again in memory as one AES-GCM
        message under this process's pack key, which never leaves memory (a random key made at
        start, replaced after PACK_KEY_MESSAGES packs so that its random nonces stay far below
        the AES-GCM bound; a pack under a replaced key is not opened). None when one of the
        batch's data keys is not in memory.

        Why: the fast path opens a resolve-cache entry's values on every call, and for a short
        value AES-GCM's set-up is nearly all of the cost (about 1 us an open here, whatever the
        length up to a few hundred bytes): the benchmark's ten values cost one open instead of
        ten. A pack is never stored and holds nothing plaintext; the data keys are not used for
        it (their nonce budget is the stored values'), but `open_packed` opens it only while
        every data key of its values is in memory, so a data key dropped (rotation, a keyring
        reload, a tenant's keys destroyed) stops the pack as it stops the values."""
        needs: list[tuple[Tenant, int]] = []
        for tenant, generation, _, _ in batch.groups:
            if self.cached(tenant, generation) is None:
                return None
            needs.append((tenant, generation))
        if self._packs_sealed >= PACK_KEY_MESSAGES:
            self._pack_aead, self._pack_generation = Aead(pysecrets.token_bytes(KEY_BYTES)), self._pack_generation + 1
            self._packs_sealed = 0
        self._packs_sealed += 1
        bounds: list[tuple[int, int]] = []
        start = 0
        for value in values:
            bounds.append((start, start + len(value)))
            start += len(value)
        sealed = self._pack_aead.encrypt(b"".join(values), PACK_ASSOCIATED_DATA)
        return PackedBatch(tuple(needs), self._pack_generation, sealed, tuple(bounds))

    def open_packed(self, packed: PackedBatch) -> list[bytes] | None:
        """The values `pack` sealed, in the batch's order; None when a data key they need is not
        in memory, the pack key was replaced since, or the pack fails to open (which nothing but
        a fault can cause): the caller then opens the stored values themselves, each checked."""
        for tenant, generation in packed.needs:
            if self.cached(tenant, generation) is None:
                return None
        if packed.generation != self._pack_generation:
            return None
        try:
            joined = self._pack_aead.decrypt(packed.sealed, PACK_ASSOCIATED_DATA)
        except IntegrityError:
            return None
        return [joined[start:end] for start, end in packed.bounds]

    def open_cached(self, tenant: Tenant, key: str, version: int, prepared: SealedParts) -> SecretValue | None:
        """`open_parts` without a coroutine, when the data key is in memory; None when it is not."""
        data_key = self.cached(tenant, prepared.generation)
        if data_key is None:
            return None
        try:
            return open_parts(data_key, prepared)
        except IntegrityError:
            raise data_loss(key, version) from None

    async def open_parts(self, tenant: Tenant, key: str, version: int, prepared: SealedParts) -> SecretValue:
        """`open` for a value already taken apart (the resolve cache keeps them so)."""
        data_key = self.cached(tenant, prepared.generation)
        if data_key is None:
            data_key = await self.for_opening(tenant, prepared.generation)
        try:
            return open_parts(data_key, prepared)
        except IntegrityError:
            raise data_loss(key, version) from None


async def verify_keyring(db: Database, keyring: WatchedFile[Keyring], use: KeyUse | None = None) -> None:
    """The start-up check of SPEC 4.2: raises ConfigError (one line naming the key ids and the
    data keys under each) when the keyring cannot open every data key in use, because a master key
    is missing or its material differs from the check value recorded for its id. Otherwise records
    the check value of every keyring key this database has not seen yet, and leaves what it read
    with the keyring file's reload check (`use`, by default the keyring file's own)."""
    current = keyring.current()
    async with db.transaction() as conn:
        in_use = await repo.count_data_keys_by_master(conn)
        recorded = await keychecks.check_values(conn)
        problem = stranded(current, in_use, recorded)
        if not problem:
            await keychecks.record_check_values(
                conn, {k: v for k, v in current.check_values.items() if k not in recorded}
            )
            recorded = await keychecks.check_values(conn)
            problem = stranded(current, in_use, recorded)  # another replica may have recorded first
    if problem:
        raise ConfigError(f"cannot start: {problem.describe()}")
    if use is None and isinstance(keyring, KeyringFile):
        use = keyring.use
    if use is not None:
        use.learn(in_use, recorded)


class SealedBatch:
    """Sealed values taken apart for opening together (DataKeys.open_batch): grouped by the data
    key they need, (tenant, generation, their places in the batch, (nonce, body, associated
    data) of each), and the (key, version) of each, in the batch's order."""

    __slots__ = ("groups", "names")

    def __init__(self, sealed: Sequence[tuple[Tenant, str, int, SealedParts]]) -> None:
        by_key: dict[tuple[Tenant, int], tuple[list[int], list[tuple[bytes, bytes, bytes]]]] = {}
        for position, (tenant, _, _, prepared) in enumerate(sealed):
            positions, parts = by_key.setdefault((tenant, prepared.generation), ([], []))
            positions.append(position)
            parts.append((prepared.nonce, prepared.body, prepared.associated_data))
        self.groups = tuple(
            (tenant, generation, tuple(positions), tuple(parts))
            for (tenant, generation), (positions, parts) in by_key.items()
        )
        self.names = tuple((key, version) for _, key, version, _ in sealed)


# The associated data of a pack (DataKeys.pack), and how many packs one pack key seals before
# it is replaced: random 96-bit nonces stay safe for 2^32 messages under one key, and 2^28 keeps
# the chance of a repeated nonce below 2^-41.
PACK_ASSOCIATED_DATA: Final = b"secrets-service/resolve-cache-pack/v1"
PACK_KEY_MESSAGES: Final = 1 << 28


class PackedBatch:
    """A SealedBatch's values sealed again in memory for the fast path (DataKeys.pack): the data
    keys its values need, as (tenant, generation); the pack key's generation; the sealed message
    of the values joined; each value's (start, end) in it, in the batch's order."""

    __slots__ = ("bounds", "generation", "needs", "sealed", "size")

    def __init__(
        self, needs: tuple[tuple[Tenant, int], ...], generation: int, sealed: bytes, bounds: tuple[tuple[int, int], ...]
    ) -> None:
        self.needs = needs
        self.generation = generation
        self.sealed = sealed
        self.bounds = bounds
        # What it holds, in bytes, for the resolve cache's budget: the message, and the tuples.
        self.size = 300 + len(sealed) + 120 * len(needs) + 100 * len(bounds)


class SecretDataLoss(DataLoss):
    """DataLoss of one secret's sealed value, which names the secret (key and version) so that
    the audit log can record it as a key that failed."""

    def __init__(self, key: str, version: int) -> None:
        super().__init__(
            f"secret {key!r} version {version} failed authentication: its sealed value was altered or moved"
        )
        self.key = key
        self.version = version


def data_loss(key: str, version: int) -> SecretDataLoss:
    """The error for a sealed value that failed to open: names the secret, never shows a value."""
    return SecretDataLoss(key, version)

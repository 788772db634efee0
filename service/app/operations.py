"""Operators' use cases: master key status and rotation, and the audit log."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from service.app.audit import AuditBuffer, audit_record
from service.app.audit_listing import AuditPage, audit_page, audit_query
from service.app.cache import scope_tag
from service.app.context import Caller
from service.app.keys import DataKeys, key_tag
from service.crypto.aead import IntegrityError
from service.crypto.envelope import DataKey, seal
from service.domain.audit_filter import AuditFilter
from service.domain.errors import DataLoss, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from service.domain.keys import require_id
from service.domain.model import Scope, Tenant, TenantKind
from service.store import datakeys
from service.store import repository as repo
from service.store.notify import notify
from service.store.pool import Database

log = logging.getLogger(__name__)

# Rows re-wrapped per transaction: small enough that each transaction holds its row locks for
# milliseconds, so saves that create data keys are never stalled by a rotation.
ROTATION_BATCH = 200
# Values re-sealed per transaction in a data-key rotation: each transaction holds the scope's
# revision lock (saves of the scope wait for it) for a few milliseconds.
RESEAL_BATCH = 200
# Between the last value moving off the old data key and the key's destruction: resolves that read
# a value before it moved finish opening it with the old key meanwhile.
DATA_KEY_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class KeyStatus:
    primary: str
    # (key id, data keys it wraps, whether the keyring holds it)
    keys: list[tuple[str, int, bool]]


@dataclass(frozen=True, slots=True)
class RotationResult:
    primary: str
    rewrapped: int
    already_current: int


@dataclass(frozen=True, slots=True)
class DataKeyRotation:
    tenant: Tenant
    old_generation: int
    new_generation: int
    resealed: int


class OperationsService:
    def __init__(self, db: Database, keys: DataKeys, audit: AuditBuffer) -> None:
        self._db = db
        self._keys = keys
        self._audit = audit

    async def key_status(self) -> KeyStatus:
        keyring = self._keys.keyring.current()
        async with self._db.connection() as conn:
            counts = await repo.count_data_keys_by_master(conn)
        ids = sorted(set(keyring.key_ids) | set(counts))
        return KeyStatus(keyring.primary_id, [(i, counts.get(i, 0), i in keyring.key_ids) for i in ids])

    async def rotate(self, caller: Caller) -> RotationResult:
        """Re-wraps every data key under the keyring's current primary, in small transactions,
        while the service keeps serving (data key bytes do not change, so caches stay valid)."""
        keyring = self._keys.keyring.current()
        primary = keyring.primary_id
        await self._keys.record_key(keyring, primary)
        rewrapped = 0
        while True:
            async with self._db.transaction() as conn:
                batch = await repo.data_keys_not_under(conn, primary, ROTATION_BATCH)
                for row in batch:
                    try:
                        material = keyring.unwrap(str(row.tenant), row.wrapped)
                    except IntegrityError:
                        raise DataLoss(
                            f"the data key of {row.tenant} failed authentication; rotation stopped"
                        ) from None
                    await repo.rewrap_data_key(conn, row, primary, keyring.wrap(str(row.tenant), material))
                if batch:
                    rewrapped += len(batch)
                    detail = f"re-wrapped {len(batch)} data keys under {primary}"
                    await repo.insert_audit(conn, audit_record(caller, "", "keys.rotate", detail=detail))
            if len(batch) < ROTATION_BATCH:
                break
        # What the keyring must keep opening changed: the reload check and health learn it.
        await self._keys.refresh_use()
        async with self._db.connection() as conn:
            counts = await repo.count_data_keys_by_master(conn)
        log.info("key rotation: %d data keys re-wrapped under %s", rewrapped, primary)
        return RotationResult(primary, rewrapped, counts.get(primary, 0) - rewrapped)

    async def rotate_data_keys(self, caller: Caller, workspace_id: str, user_id: str) -> DataKeyRotation:
        """Gives one tenant (a workspace's secrets, or a user's personal ones) a new data key and
        destroys the old one, online:

        1. a new generation, wrapped under the primary master key, committed on its own;
        2. every current and kept value naming another generation is opened (with the generation
           its header names) and sealed again under the new one, same associated data, in batches:
           each batch is a transaction that takes the scope's revision lock (saves of the scope
           serialize with it; a save checks its sealing key under that lock, `confirm_sealing`)
           and locks the rows it rewrites, and notifies the scope's tag so every replica drops
           resolve plans that hold the old bytes;
        3. after a short grace (resolves that read a value before it moved finish opening it), a
           last transaction, under the revision lock again, finds no row naming an older
           generation (or re-seals those a save slipped in, and waits again), deletes the older
           generations and notifies the tenant's key tag, on which every replica drops the
           tenant's cached keys. Audited as `keys.rotate_data_key`, with no value.
        """
        tenant = _tenant(workspace_id, user_id)
        scope = Scope.WORKSPACE if tenant.kind is TenantKind.WORKSPACE else Scope.PERSONAL
        added = await self._keys.add_generation(tenant)
        if added is None:
            raise NotFound(f"{_describe(tenant)} has no data key: nothing was ever stored for it")
        old_generation, new_key = added
        try:
            # Replicas learn of the new generation now, so saves seal under it from here on.
            async with self._db.transaction() as conn:
                await notify(conn, [key_tag(tenant)])
            resealed = 0
            while True:
                resealed += await self._reseal_until_done(tenant, scope, new_key)
                await asyncio.sleep(DATA_KEY_GRACE)
                async with self._db.transaction() as conn:
                    await repo.lock_revision(conn, scope, tenant.id)
                    await self._require_newest(conn, new_key)
                    if await datakeys.sealed_not_under(conn, scope, tenant.id, new_key.generation, 1):
                        continue  # a value was sealed under an old generation meanwhile: move it, wait again
                    destroyed = await datakeys.delete_generations_before(conn, tenant, new_key.generation)
                    detail = (
                        f"data key of {_describe(tenant)}: generation {new_key.generation} replaces "
                        f"{', '.join(map(str, destroyed)) or old_generation} (destroyed); {resealed} values re-sealed"
                    )
                    await repo.insert_audit(
                        conn,
                        audit_record(
                            caller,
                            workspace_id,
                            "keys.rotate_data_key",
                            detail=detail,
                            user_id=user_id or caller.user_id,
                        ),
                    )
                    await notify(conn, [key_tag(tenant)])
                break
        finally:
            self._keys.forget(tenant)
        log.info("data key rotation of %s: generation %d, %d values re-sealed", tenant, new_key.generation, resealed)
        return DataKeyRotation(tenant, old_generation, new_key.generation, resealed)

    async def _reseal_until_done(self, tenant: Tenant, scope: Scope, new_key: DataKey) -> int:
        """Moves every value of the scope onto `new_key`, RESEAL_BATCH per transaction."""
        resealed = 0
        while True:
            async with self._db.transaction() as conn:
                # Lock order as in saves: the scope's revision row first, then secret rows.
                await repo.lock_revision(conn, scope, tenant.id)
                await self._require_newest(conn, new_key)
                rows = await datakeys.sealed_not_under(conn, scope, tenant.id, new_key.generation, RESEAL_BATCH)
                if not rows:
                    return resealed
                moved = []
                for row in rows:
                    value = await self._keys.open(tenant, scope, row.key, row.version, row.secret_id, row.sealed)
                    moved.append((row, seal(new_key, scope, row.key, row.version, row.secret_id, value)))
                await datakeys.replace_sealed(conn, moved)
                await notify(conn, [scope_tag(scope, tenant.id)])
                resealed += len(rows)

    async def _require_newest(self, conn: asyncpg.Connection, new_key: DataKey) -> None:
        # Two rotations of one tenant: the later one (newer generation) wins; this one stops
        # rather than move values back onto its generation.
        if await datakeys.latest_generation(conn, new_key.tenant) != new_key.generation:
            raise FailedPrecondition(
                f"a newer data key of {_describe(new_key.tenant)} was created meanwhile (another rotation); "
                "that rotation finishes the work"
            )

    async def audit_events(self, where: AuditFilter, page_size: int, page_token: str) -> AuditPage:
        """One page of the audit log (app/audit_listing.py)."""
        query = audit_query(where, page_size, page_token)  # checked before the flush: a bad request writes nothing
        # Resolve events wait in a buffer for at most a few milliseconds; an operator reading the
        # log should see them.
        await self._audit.flush()
        return await audit_page(self._db, query)


def _tenant(workspace_id: str, user_id: str) -> Tenant:
    require_id("workspace_id", workspace_id, required=False)
    require_id("user_id", user_id, required=False)
    if bool(workspace_id) == bool(user_id):
        field = "user_id" if workspace_id else "workspace_id"
        raise InvalidArgument(
            "name exactly one tenant: workspace_id (its workspace secrets) or user_id (their personal secrets)",
            [FieldViolation(field, "exactly one of workspace_id and user_id must be set")],
        )
    return Tenant(TenantKind.WORKSPACE, workspace_id) if workspace_id else Tenant(TenantKind.USER, user_id)


def _describe(tenant: Tenant) -> str:
    return f"{'workspace' if tenant.kind is TenantKind.WORKSPACE else 'user'} {tenant.id!r}"

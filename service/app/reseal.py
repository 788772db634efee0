"""The one-time re-sealing of format-1 values as format 2 (bound to the secret's identity).

Format 1 bound a value to its tenant, scope, key and version but not to the secret itself, so a
deleted secret's ciphertext copied onto a re-created secret of the same key opened as the old
value (security review, finding 15). Format 2 adds the secret's row id; this migration opens
every format-1 value left in the database, in the current secret row and in its kept versions,
and seals it again as format 2 under the same data key. It runs at start-up, after the schema
migrations, under an advisory lock, in one transaction: replicas starting together do it once,
and a crash halfway leaves the old rows, to be done again at the next start. Afterwards nothing
opens format 1 (envelope.split_sealed refuses it).
"""

from __future__ import annotations

import logging

from service.app.keys import DataKeys
from service.crypto.aead import IntegrityError
from service.crypto.envelope import open_parts, seal, split_sealed_v1
from service.domain.errors import DataLoss
from service.domain.model import Tenant
from service.store import datakeys
from service.store import repository as repo
from service.store.pool import Database

log = logging.getLogger(__name__)

RESEAL_LOCK_ID = 7_351_902_115


async def reseal_legacy_values(db: Database, keys: DataKeys) -> int:
    """Re-seals every format-1 value; returns how many were re-sealed."""
    done = 0
    failed = 0
    async with db.transaction(timeout=30) as conn:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", RESEAL_LOCK_ID)
        legacy = await repo.legacy_sealed_values(conn)
        if not legacy:
            return 0
        updates: list[tuple[datakeys.SealedRow, bytes]] = []
        for item in legacy:
            tenant = Tenant.for_scope(item.scope, item.owner_id)
            try:
                prepared = split_sealed_v1(tenant, item.scope, item.key, item.version, item.sealed)
                data_key = await keys.for_opening(tenant, prepared.generation)
                value = open_parts(data_key, prepared)
            except (IntegrityError, DataLoss):
                # Altered or moved: left as it is, it fails to open with DATA_LOSS when used, as
                # it would have before; a start-up must not be held hostage by one bad row.
                failed += 1
                continue
            resealed = seal(data_key, item.scope, item.key, item.version, item.secret_id, value)
            row = datakeys.SealedRow(item.secret_id, item.in_versions, item.key, item.version, item.sealed)
            updates.append((row, resealed))
            done += 1
        await datakeys.replace_sealed(conn, updates)
    log.info("re-sealed %d values with their secret's identity (format 2)", done)
    if failed:
        log.error(
            "%d stored values failed authentication and were not re-sealed; they will fail with DATA_LOSS", failed
        )
    return done

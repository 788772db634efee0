"""The executor's use case: look up and open the secrets a run references."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from service.app.audit import AuditBuffer
from service.app.cache import ResolveCache
from service.app.context import Caller
from service.app.keys import DataKeys
from service.domain.model import Scope, Tenant
from service.domain.resolution import Decision, decide_all
from service.domain.values import SecretValue
from service.store import repository as repo
from service.store.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    decision: Decision
    # Set when the decision chose a secret.
    value: SecretValue | None


class ResolverService:
    def __init__(self, db: Database, keys: DataKeys, audit: AuditBuffer, cache: ResolveCache) -> None:
        self._db = db
        self._keys = keys
        self._audit = audit
        self._cache = cache

    async def _snapshot(self, workspace_id: str, run_user_id: str, keys: Sequence[str]) -> repo.ResolveSnapshot:
        """Everything the resolve needs, in one round trip, or none when the cache has it."""
        cache_key = self._cache.key(workspace_id, run_user_id, keys)
        snapshot = self._cache.get(cache_key)
        if snapshot is None:
            epoch = self._cache.epoch
            async with self._db.connection() as conn:
                snapshot = await repo.fetch_for_resolve(conn, workspace_id, run_user_id, keys)
            self._cache.put(cache_key, snapshot, epoch)
        return snapshot

    async def resolve_keys(self, workspace_id: str, run_user_id: str, keys: Sequence[str]) -> dict[str, KeyOutcome]:
        snapshot = await self._snapshot(workspace_id, run_user_id, keys)
        decisions = decide_all(keys, snapshot.permission, [row.candidate for row in snapshot.rows])
        sealed = {(row.candidate.scope, row.candidate.key): row.sealed for row in snapshot.rows}
        tenants = {
            Scope.WORKSPACE: Tenant.for_scope(Scope.WORKSPACE, workspace_id),
            Scope.PERSONAL: Tenant.for_scope(Scope.PERSONAL, run_user_id),
        }
        await self._keys.load([tenants[d.chosen.scope] for d in decisions.values() if d.chosen is not None])
        if log.isEnabledFor(logging.DEBUG):
            log.debug("resolve in %s for %s: %s", workspace_id, run_user_id, list(decisions.values()))
        outcomes: dict[str, KeyOutcome] = {}
        for key, d in decisions.items():
            value = None
            if d.chosen is not None:
                scope = d.chosen.scope
                value = await self._keys.open(tenants[scope], scope, key, d.chosen.version, sealed[(scope, key)])
            outcomes[key] = KeyOutcome(d, value)
        log.debug("resolved %s", outcomes)  # KeyOutcome holds SecretValues: they print as ***
        return outcomes

    def record(
        self,
        caller: Caller,
        workspace_id: str,
        run_user_id: str,
        execution_id: str,
        used: Sequence[Decision],
        failed: int,
    ) -> None:
        self._audit.add(
            repo.AuditRecord(
                principal=caller.principal,
                user_id=run_user_id,
                workspace_id=workspace_id,
                action="inputs.resolve",
                outcome="ok" if failed == 0 else f"{failed} block(s) failed",
                keys=tuple((d.key, int(d.chosen.scope), d.chosen.version) for d in used if d.chosen is not None),
                execution_id=execution_id,
                # Buffered events carry their own time: they are written up to 50 ms later.
                at=datetime.now(UTC),
            )
        )

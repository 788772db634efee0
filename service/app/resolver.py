"""The executor's use case: look up and open the secrets a run references."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from service.app.audit import AuditBuffer
from service.app.cache import ResolveCache
from service.app.context import Caller
from service.app.keys import DataKeys, data_loss
from service.crypto.aead import IntegrityError
from service.crypto.envelope import Prepared, prepare
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


@dataclass(frozen=True, slots=True)
class Planned:
    """How to serve one key: the decision and, when a secret was chosen, its sealed value taken
    apart for opening (None when the stored bytes are malformed: opening it is DataLoss)."""

    decision: Decision
    tenant: Tenant | None = None
    prepared: Prepared | None = None
    size: int = 0


# What a resolve of one (workspace, run user, keys) needs, decided once per database read and
# kept in the resolve cache; only sealed bytes, never a value.
ResolvePlan = dict[str, Planned]


def plan_resolve(
    snapshot: repo.ResolveSnapshot, workspace_id: str, run_user_id: str, keys: Sequence[str]
) -> ResolvePlan:
    decisions = decide_all(keys, snapshot.permission, [row.candidate for row in snapshot.rows])
    sealed = {(row.candidate.scope, row.candidate.key): (row.sealed, row.secret_id) for row in snapshot.rows}
    tenants = {
        Scope.WORKSPACE: Tenant.for_scope(Scope.WORKSPACE, workspace_id),
        Scope.PERSONAL: Tenant.for_scope(Scope.PERSONAL, run_user_id),
    }
    plan: ResolvePlan = {}
    for key, d in decisions.items():
        if d.chosen is None:
            plan[key] = Planned(d)
            continue
        tenant = tenants[d.chosen.scope]
        stored, secret_id = sealed[(d.chosen.scope, key)]
        try:
            prepared: Prepared | None = prepare(tenant, d.chosen.scope, key, d.chosen.version, secret_id, stored)
        except IntegrityError:
            prepared = None
        plan[key] = Planned(d, tenant, prepared, len(stored))
    return plan


class ResolverService:
    def __init__(self, db: Database, keys: DataKeys, audit: AuditBuffer, cache: ResolveCache[ResolvePlan]) -> None:
        self._db = db
        self._keys = keys
        self._audit = audit
        self._cache = cache

    async def _plan(self, workspace_id: str, run_user_id: str, keys: Sequence[str]) -> ResolvePlan:
        """Everything the resolve needs, from one round trip, or from the cache."""
        cache_key = self._cache.key(workspace_id, run_user_id, keys)
        plan = self._cache.get(cache_key)
        if plan is None:
            epoch = self._cache.epoch
            async with self._db.connection() as conn:
                snapshot = await repo.fetch_for_resolve(conn, workspace_id, run_user_id, keys)
            plan = plan_resolve(snapshot, workspace_id, run_user_id, keys)
            size = sum(p.size + len(k) + 300 for k, p in plan.items())  # 300: the objects around them
            self._cache.put(cache_key, plan, epoch, size)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "resolve plan for %s / %s: %s", workspace_id, run_user_id, [p.decision for p in plan.values()]
                )
        return plan

    async def resolve_keys(self, workspace_id: str, run_user_id: str, keys: Sequence[str]) -> dict[str, KeyOutcome]:
        plan = await self._plan(workspace_id, run_user_id, keys)
        outcomes: dict[str, KeyOutcome] = {}
        for key, planned in plan.items():
            value = None
            chosen = planned.decision.chosen
            if chosen is not None and planned.tenant is not None:
                if planned.prepared is None:
                    raise data_loss(key, chosen.version)
                value = await self._keys.open_prepared(planned.tenant, key, chosen.version, planned.prepared)
            outcomes[key] = KeyOutcome(planned.decision, value)
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
        grant_id: str = "",
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
                # The run grant the resolve used (its id; never the token).
                detail=f"grant {grant_id}" if grant_id else "",
                # Buffered events carry their own time: they are written up to 50 ms later.
                at=datetime.now(UTC),
            )
        )

"""The executor's use case: look up and open the secrets a run references."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.app.audit import AuditBuffer
from service.app.context import Caller
from service.app.keys import DataKeys
from service.domain.model import Scope, Tenant
from service.domain.resolution import Candidate, Decision, decide
from service.domain.values import SecretValue
from service.store import repository as repo
from service.store.db import Database


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    decision: Decision
    # Set when the decision chose a secret.
    value: SecretValue | None


class ResolverService:
    def __init__(self, db: Database, keys: DataKeys, audit: AuditBuffer) -> None:
        self._db = db
        self._keys = keys
        self._audit = audit

    async def resolve_keys(self, workspace_id: str, run_user_id: str, keys: Sequence[str]) -> dict[str, KeyOutcome]:
        async with self._db.connection() as conn:
            snapshot = await repo.fetch_for_resolve(conn, workspace_id, run_user_id, keys)
        workspace: dict[str, Candidate] = {}
        personal: dict[str, Candidate] = {}
        sealed: dict[tuple[Scope, str], repo.ResolveRow] = {}
        for row in snapshot.rows:
            target = workspace if row.scope is Scope.WORKSPACE else personal
            target[row.key] = Candidate(row.scope, row.key, row.version, row.restricted, row.run_user_role)
            sealed[(row.scope, row.key)] = row
        decisions = [decide(k, snapshot.permission, workspace.get(k), personal.get(k)) for k in keys]
        tenants = {
            Scope.WORKSPACE: Tenant.for_scope(Scope.WORKSPACE, workspace_id),
            Scope.PERSONAL: Tenant.for_scope(Scope.PERSONAL, run_user_id),
        }
        needed = {d.chosen.scope for d in decisions if d.chosen is not None}
        await self._keys.load([tenants[s] for s in needed])
        outcomes: dict[str, KeyOutcome] = {}
        for d in decisions:
            value = None
            if d.chosen is not None:
                row = sealed[(d.chosen.scope, d.key)]
                value = await self._keys.open(tenants[row.scope], row.scope, row.key, row.version, row.sealed)
            outcomes[d.key] = KeyOutcome(d, value)
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
            )
        )

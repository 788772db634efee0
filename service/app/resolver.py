"""The executor's use case: look up and open the secrets a run references."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, NamedTuple

from service.app.audit import AuditBuffer, event_identity, event_keys_bytes
from service.app.cache import Kept, ResolveCache
from service.app.context import Caller
from service.app.keys import DataKeys, PackedBatch, SealedBatch, SecretDataLoss, data_loss
from service.app.pins import Pin, RunPins
from service.crypto.aead import IntegrityError
from service.crypto.envelope import SealedParts, split_sealed
from service.domain.errors import DataLoss
from service.domain.limits import PIN_TTL_SECONDS, VERSIONS_KEPT
from service.domain.model import BlockErrorCode, Scope, Tenant
from service.domain.policy import can_use_workspace_secret
from service.domain.resolution import Candidate, Decision, decide_all, unexpired
from service.domain.values import SecretValue
from service.store import pins as pin_store
from service.store import repository as repo
from service.store.pool import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    decision: Decision
    # Set when the decision chose a secret.
    value: SecretValue | None
    # The id of the secret whose value it is (0 when none), for usage (service/app/usage.py).
    secret_id: int = 0


@dataclass(frozen=True, slots=True)
class Planned:
    """How to serve one key: the decision and, when a secret was chosen, its sealed value taken
    apart for opening (None when the stored bytes are malformed: opening it is DataLoss)."""

    decision: Decision
    tenant: Tenant | None = None
    prepared: SealedParts | None = None
    size: int = 0
    # The chosen secret's id (0 when none was chosen).
    secret_id: int = 0
    # Every secret found for the key, by scope: (its id, the candidate, whether the run user may
    # use it). What a resolve that pinned another version than the chosen one checks it against.
    found: tuple[tuple[int, Candidate, bool], ...] = ()


# What a resolve of one (workspace, run user, keys) needs, decided once per database read and
# kept in the resolve cache; only sealed bytes, never a value.
ResolvePlan = dict[str, Planned]


@dataclass(frozen=True, slots=True)
class AuditKeys:
    """What the audit event of a resolve served wholly from one resolve-cache entry lists: the
    same for every such resolve, so built once per entry (names, scopes, versions, secret ids)."""

    keys: tuple[tuple[str, int, int], ...]
    keys_json: str
    secret_ids: tuple[int, ...]
    size: int  # their share of a pending event's bytes (service/app/audit.py event_keys_bytes)


@dataclass(frozen=True, slots=True)
class FrameKeeper:
    """A resolve-cache entry that served a whole resolve, every key from its plan: what the
    servicer derives from that resolve's response (service/api/fastpath.py) may be attached to
    it (`attach(name, value, size)`) and is dropped with it. `keys` is the order in which
    `ResolverService.open_framed` hands over the entry's values."""

    keys: tuple[str, ...]
    attach: Callable[[Hashable, object, int], bool]


class Framed(NamedTuple):
    """The fast path's resolve (`ResolverService.open_framed`): the attachment asked for, each
    key's value (its UTF-8 bytes) in FrameKeeper.keys order, and the audit event's keys. Its
    repr shows no value."""

    frame: object
    values: list[bytes]
    audit: AuditKeys

    def __repr__(self) -> str:
        return f"Framed({len(self.values)} values: ***)"


class _Openers:
    """What the fast path needs of a resolve-cache entry whose every key resolved, made once
    per entry: (tenant, key, version, sealed value) of each key in plan order, their values
    packed (DataKeys.pack: sealed again, one message per data key), the audit event's keys, and
    the last run whose pins were found to be the entry's choices (`pins_seen`)."""

    __slots__ = ("audit", "batch", "packed", "pins_seen", "sealed")

    def __init__(self, sealed: tuple[tuple[Tenant, str, int, SealedParts], ...], audit: AuditKeys) -> None:
        self.sealed = sealed
        self.batch = SealedBatch(sealed)
        self.packed: PackedBatch | None = None
        self.audit = audit
        # (workspace, execution, run user, that run's map of pins as RunPins held it, how many
        # pins it held, the first of their expiries): while RunPins still holds that very map,
        # as large, and none of its pins has expired, every pin is still the one seen.
        self.pins_seen: tuple[str, str, str, object, int, float] | None = None

    def size(self) -> int:
        """What it holds, in bytes, for the resolve cache's budget (its pack included)."""
        packed = self.packed.size if self.packed is not None else 0
        return 600 + 400 * len(self.sealed) + 5 * len(self.audit.keys_json) + packed


# The audit action of a resolve.
RESOLVE_ACTION: Final = "inputs.resolve"

# The name of the _Openers attachment on a resolve-cache entry.
_OPENERS: Final = ("openers",)


def plan_resolve(
    snapshot: repo.ResolveSnapshot, workspace_id: str, run_user_id: str, keys: Sequence[str], now: float | None = None
) -> ResolvePlan:
    """Decides each key as of `now` (a secret expired by then fails: SECRET_EXPIRED)."""
    now = time.time() if now is None else now
    decisions = decide_all(keys, snapshot.permission, [row.candidate for row in snapshot.rows], now)
    sealed = {(row.candidate.scope, row.candidate.key): (row.sealed, row.secret_id) for row in snapshot.rows}
    found: dict[str, list[tuple[int, Candidate, bool]]] = {}
    for row in snapshot.rows:
        c = row.candidate
        usable = snapshot.permission is not None and (
            c.scope is Scope.PERSONAL or can_use_workspace_secret(snapshot.permission, c.restricted, c.run_user_role)
        )
        found.setdefault(c.key, []).append((row.secret_id, c, usable))
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
            prepared: SealedParts | None = split_sealed(
                tenant, d.chosen.scope, key, d.chosen.version, secret_id, stored
            )
        except IntegrityError:
            prepared = None
        plan[key] = Planned(d, tenant, prepared, len(stored), secret_id, tuple(found.get(key, ())))
    return plan


def _failed(key: str, code: BlockErrorCode, reason: str) -> KeyOutcome:
    return KeyOutcome(Decision(key, None, code, reason), None)


class ResolverService:
    def __init__(
        self,
        db: Database,
        keys: DataKeys,
        audit: AuditBuffer,
        cache: ResolveCache[ResolvePlan],
        pins: RunPins | None = None,
    ) -> None:
        self._db = db
        self._keys = keys
        self._audit = audit
        self._cache = cache
        self._pins = pins if pins is not None else RunPins()

    async def _plan(
        self, workspace_id: str, run_user_id: str, keys: Sequence[str]
    ) -> tuple[ResolvePlan, Kept[ResolvePlan] | None]:
        """Everything the resolve needs, from one round trip, or from the cache; and the cache
        entry it is (None when it is not cached)."""
        cache_key = self._cache.key(workspace_id, run_user_id, keys)
        kept = self._cache.kept(cache_key)
        if kept is not None:
            return kept.plan, kept
        epoch = self._cache.epoch
        async with self._db.connection() as conn:
            snapshot = await repo.fetch_for_resolve(conn, workspace_id, run_user_id, keys)
        now = time.time()
        plan = plan_resolve(snapshot, workspace_id, run_user_id, keys, now)
        size = sum(p.size + len(k) + 300 for k, p in plan.items())  # 300: the objects around them
        # Decided as of now: the entry must not outlive the first expiry still to come.
        expiring = [e for row in snapshot.rows if (e := row.candidate.expires_at) is not None and e > now]
        kept = self._cache.put(cache_key, plan, epoch, size, ttl=min(expiring) - now if expiring else None)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("resolve plan for %s / %s: %s", workspace_id, run_user_id, [p.decision for p in plan.values()])
        return plan, kept

    async def resolve_keys(
        self,
        workspace_id: str,
        run_user_id: str,
        keys: Sequence[str],
        execution_id: str = "",
        latest_values: bool = False,
    ) -> dict[str, KeyOutcome]:
        """What each key resolves to for the run: with an execution id (and not `latest_values`),
        the versions the execution pinned (service/app/pins.py), else the newest."""
        outcomes, _ = await self.resolve_keys_kept(workspace_id, run_user_id, keys, execution_id, latest_values)
        return outcomes

    async def resolve_keys_kept(
        self,
        workspace_id: str,
        run_user_id: str,
        keys: Sequence[str],
        execution_id: str = "",
        latest_values: bool = False,
    ) -> tuple[dict[str, KeyOutcome], FrameKeeper | None]:
        """`resolve_keys`, and the resolve-cache entry that served it when every key resolved,
        each as the entry decided (no pin of the run chose otherwise); else None."""
        plan, kept = await self._plan(workspace_id, run_user_id, keys)
        outcomes: dict[str, KeyOutcome] = {}
        if execution_id and not latest_values:
            outcomes = (
                await self._pins_differ(kept, workspace_id, execution_id, run_user_id)
                if kept is not None
                else await self._pinned(plan, workspace_id, execution_id, run_user_id)
            )
        if outcomes:
            kept = None  # a pin chose another version than the entry's
        elif kept is not None:
            # Every key as the entry decided: its values opened together, as the fast path does.
            opened = await self._open_entry(kept)
            if opened is not None:
                for (key, planned), utf8 in zip(plan.items(), opened[1], strict=True):
                    try:
                        text = utf8.decode("utf-8")
                    except UnicodeDecodeError:
                        raise data_loss(
                            key, planned.decision.chosen.version if planned.decision.chosen else 0
                        ) from None
                    outcomes[key] = KeyOutcome(planned.decision, SecretValue(text), planned.secret_id)
                return outcomes, FrameKeeper(tuple(plan), kept.attach)
        for key, planned in plan.items():
            if key in outcomes:
                continue
            value = None
            chosen = planned.decision.chosen
            if chosen is not None and planned.tenant is not None:
                if planned.prepared is None:
                    raise data_loss(key, chosen.version)
                value = self._keys.open_cached(planned.tenant, key, chosen.version, planned.prepared)
                if value is None:  # the tenant's data key is not in memory (yet, or any more)
                    value = await self._keys.open_parts(planned.tenant, key, chosen.version, planned.prepared)
            else:
                kept = None  # a key that does not resolve
            outcomes[key] = KeyOutcome(planned.decision, value, planned.secret_id)
        log.debug("resolved %s", outcomes)  # KeyOutcome holds SecretValues: they print as ***
        return outcomes, (FrameKeeper(tuple(plan), kept.attach) if kept is not None else None)

    async def open_framed(
        self,
        workspace_id: str,
        run_user_id: str,
        keys: Sequence[str],
        execution_id: str,
        latest_values: bool,
        frame_name: Hashable,
    ) -> Framed | None:
        """The fast path of a resolve (service/api/fastpath.py): when the resolve cache holds
        the keys' entry, the entry carries the attachment `frame_name` (which a whole resolve
        from that entry attached through its FrameKeeper) and the run's pins all chose what the
        entry did, opens every key's value, in FrameKeeper.keys order. None otherwise, before any
        value is opened: the caller then takes the ordinary path. DataLoss as `resolve_keys`."""
        # Not counted here: a resolve this hands to the ordinary path is counted there, once.
        kept = self._cache.kept(self._cache.key(workspace_id, run_user_id, keys), counted=False)
        if kept is None:
            return None
        frame = kept.attachment(frame_name)
        if frame is None:
            return None
        if (
            execution_id
            and not latest_values
            and await self._pins_differ(kept, workspace_id, execution_id, run_user_id)
        ):
            return None
        opened = await self._open_entry(kept)
        if opened is None:
            return None  # never so once a frame is attached: every key resolved then
        openers, values = opened
        self._cache.hits += 1
        return Framed(frame, values, openers.audit)

    async def _pins_differ(
        self, kept: Kept[ResolvePlan], workspace_id: str, execution_id: str, run_user_id: str
    ) -> dict[str, KeyOutcome]:
        """`_pinned` for the entry's plan, answered from memory when this run's pins were last
        found to be the entry's choices (_Openers.pins_seen) and nothing has changed them since:
        a run resolves block after block with the same keys."""
        plan = kept.plan
        openers = kept.attachment(_OPENERS)
        seen = openers.pins_seen if isinstance(openers, _Openers) else None
        local = self._pins.get(workspace_id, execution_id, run_user_id)
        if (
            seen is not None
            and local is not None
            and seen[3] is local
            and seen[4] == len(local)
            and seen[5] > time.time()
            and seen[:3] == (workspace_id, execution_id, run_user_id)
        ):
            return {}
        differing = await self._pinned(plan, workspace_id, execution_id, run_user_id)
        if not differing and isinstance(openers, _Openers):
            local = self._pins.get(workspace_id, execution_id, run_user_id)
            if local is not None and all(key in local for key in plan):
                first = min(pin.expires_at for pin in local.values())
                openers.pins_seen = (workspace_id, execution_id, run_user_id, local, len(local), first)
        return differing

    async def _open_entry(self, kept: Kept[ResolvePlan]) -> tuple[_Openers, list[bytes]] | None:
        """The values of every key of a resolve-cache entry, in plan order (each its UTF-8
        bytes), from the entry's pack (DataKeys.pack) when it has one; the first time, from the
        stored values, each checked (DataLoss naming the one that fails), then packed for the
        entry's next calls. None when a key of the entry does not resolve."""
        openers = kept.attachment(_OPENERS)
        if isinstance(openers, _Openers):
            packed = openers.packed
            values = self._keys.open_packed(packed) if packed is not None else None
            if values is None:  # a data key left memory: the stored values, each checked,
                values = await self._open_each(openers)
                # and packed again, counted again (there may have been no pack before).
                openers.packed = self._keys.pack(openers.batch, values)
                kept.attach(_OPENERS, openers, openers.size())
            return openers, values
        plan = kept.plan
        sealed = []
        for key, planned in plan.items():
            chosen = planned.decision.chosen
            if chosen is None or planned.tenant is None:
                return None
            if planned.prepared is None:
                raise data_loss(key, chosen.version)
            sealed.append((planned.tenant, key, chosen.version, planned.prepared))
        openers = _Openers(tuple(sealed), _audit_keys(plan))
        values = self._keys.open_batch(openers.batch)
        if values is None:  # a tenant's data key is not in memory (yet, or any more)
            values = await self._open_each(openers)
        openers.packed = self._keys.pack(openers.batch, values)
        kept.attach(_OPENERS, openers, openers.size())
        return openers, values

    async def _open_each(self, openers: _Openers) -> list[bytes]:
        """The entry's stored values opened one by one, their data keys loaded as needed."""
        return [
            (await self._keys.open_parts(tenant, key, version, prepared)).encode()
            for tenant, key, version, prepared in openers.sealed
        ]

    async def _pinned(
        self, plan: ResolvePlan, workspace_id: str, execution_id: str, run_user_id: str
    ) -> dict[str, KeyOutcome]:
        """Pins the plan's choices the execution has not pinned yet, and returns the outcome of
        every key whose pin is not the plan's choice (the others resolve from the plan). A key
        whose newest decision fails fails whatever was pinned: the pinned secret is then gone or
        no longer usable too."""
        local = self._pins.get(workspace_id, execution_id, run_user_id)
        now = time.time()
        proposed: list[tuple[str, int, int, int]] = []
        differing: dict[str, Pin] = {}
        for key, planned in plan.items():
            chosen = planned.decision.chosen
            if chosen is None:
                continue
            pin = local.get(key) if local is not None else None
            if pin is None or pin.expires_at <= now:
                proposed.append((key, int(chosen.scope), planned.secret_id, chosen.version))
            elif pin.version != chosen.version or pin.secret_id != planned.secret_id or pin.scope != chosen.scope:
                differing[key] = pin
        if proposed:
            epoch = self._pins.epoch
            async with self._db.connection() as conn:
                rows = await pin_store.pin(conn, workspace_id, execution_id, run_user_id, proposed)
                if random.random() < 0.01:  # now and then, delete pins that no longer hold
                    await pin_store.prune_expired(conn)
            held = [
                (r.key, Pin(r.scope, r.secret_id, r.version, r.pinned_at.timestamp() + PIN_TTL_SECONDS)) for r in rows
            ]
            self._pins.put(workspace_id, execution_id, run_user_id, held, epoch)
            for key, pin in held:
                planned = plan[key]
                chosen = planned.decision.chosen
                assert chosen is not None
                if (
                    pin.version != chosen.version
                    or pin.secret_id != planned.secret_id
                    or pin.scope != int(chosen.scope)
                ):
                    differing[key] = pin
        if not differing:
            return {}
        outcomes: dict[str, KeyOutcome] = {}
        wanted: dict[str, tuple[Pin, Candidate]] = {}
        for key, pin in differing.items():
            match = next((f for f in plan[key].found if f[0] == pin.secret_id and int(f[1].scope) == pin.scope), None)
            if match is None:
                outcomes[key] = _failed(
                    key,
                    BlockErrorCode.SECRET_NOT_FOUND,
                    f"the secret execution {execution_id!r} pinned (version {pin.version}) was deleted since",
                )
            elif not match[2]:
                outcomes[key] = _failed(
                    key,
                    BlockErrorCode.SECRET_NOT_PERMITTED,
                    f"the run user may no longer use the secret execution {execution_id!r} pinned",
                )
            elif (expired := unexpired(Decision(key, match[1], None), time.time())).error is not None:
                outcomes[key] = KeyOutcome(expired, None)
            else:
                wanted[key] = (pin, match[1])
        if wanted:
            async with self._db.connection() as conn:
                kept = await pin_store.kept_versions(conn, [(p.secret_id, p.version) for p, _ in wanted.values()])
            for key, (pin, candidate) in wanted.items():
                stored = kept.get((pin.secret_id, pin.version))
                if stored is None:
                    outcomes[key] = _failed(
                        key,
                        BlockErrorCode.SECRET_NOT_FOUND,
                        f"version {pin.version}, which execution {execution_id!r} pinned, is no longer kept"
                        f" (only the last {VERSIONS_KEPT} versions are); run it again to use the current one",
                    )
                    continue
                scope = Scope(pin.scope)
                tenant = Tenant.for_scope(scope, workspace_id if scope is Scope.WORKSPACE else run_user_id)
                try:
                    prepared = split_sealed(tenant, scope, key, pin.version, pin.secret_id, stored)
                except IntegrityError:
                    raise data_loss(key, pin.version) from None
                # Opened now and not kept: no sealed bytes of a pinned version outlive this call
                # (so none survives a data-key rotation's invalidation).
                value = await self._keys.open_parts(tenant, key, pin.version, prepared)
                outcomes[key] = KeyOutcome(
                    Decision(key, replace(candidate, version=pin.version), None), value, pin.secret_id
                )
        return outcomes

    def record(
        self,
        caller: Caller,
        workspace_id: str,
        run_user_id: str,
        execution_id: str,
        used: Sequence[KeyOutcome],
        failed: int,
        grant_id: str = "",
        workflow_id: str = "",
        *,
        trigger: int = 0,
        failed_keys: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Buffers the resolve's audit event; it also feeds usage (per secret and workflow).
        `failed_keys`: the keys that did not resolve, with their BlockErrorCode numbers."""
        self._audit.add(
            _resolve_event(
                caller,
                workspace_id,
                run_user_id,
                execution_id,
                workflow_id,
                trigger,
                outcome="ok" if failed == 0 else f"{failed} block(s) failed",
                keys=tuple(
                    (o.decision.key, int(o.decision.chosen.scope), o.decision.chosen.version)
                    for o in used
                    if o.decision.chosen is not None
                ),
                detail=_grant_detail(grant_id),
                secret_ids=tuple(o.secret_id for o in used if o.secret_id),
                failed_keys=tuple(failed_keys),
            )
        )

    def record_framed(
        self,
        caller: Caller,
        workspace_id: str,
        run_user_id: str,
        execution_id: str,
        audit: AuditKeys,
        grant_id: str = "",
        workflow_id: str = "",
        *,
        trigger: int = 0,
    ) -> None:
        """`record` for a resolve served by `open_framed`: every key resolved as the cache entry
        decided, so the keys (and their JSON) are the entry's, built once. The same resolve
        pending already (a run's block resolved again within the audit interval) is only
        counted on it (AuditBuffer.repeat): no event is made."""
        at = datetime.now(UTC)
        detail = _grant_detail(grant_id)
        identity = event_identity(
            caller.principal,
            run_user_id,
            workspace_id,
            RESOLVE_ACTION,
            "ok",
            execution_id,
            workflow_id,
            trigger,
            detail,
            audit.keys,
            (),
            audit.secret_ids,
        )
        if self._audit.repeat(identity, at):
            return
        event = _resolve_event(
            caller,
            workspace_id,
            run_user_id,
            execution_id,
            workflow_id,
            trigger,
            outcome="ok",
            keys=audit.keys,
            detail=detail,
            secret_ids=audit.secret_ids,
            keys_json=audit.keys_json,
            at=at,
        )
        self._audit.add(event, audit.size, identity)

    def record_data_loss(
        self,
        caller: Caller,
        workspace_id: str,
        run_user_id: str,
        execution_id: str,
        error: DataLoss,
        *,
        workflow_id: str = "",
        trigger: int = 0,
    ) -> None:
        """Buffers the audit event of a resolve refused DATA_LOSS: outcome `data_loss`, the secret
        that failed among the failed keys (code 0: it is no block error) and the error's message,
        which names it and never a value."""
        failed = ((error.key, 0),) if isinstance(error, SecretDataLoss) else ()
        self._audit.add(
            _resolve_event(
                caller,
                workspace_id,
                run_user_id,
                execution_id,
                workflow_id,
                trigger,
                outcome="data_loss",
                detail=error.message,
                failed_keys=failed,
            )
        )


def _audit_keys(plan: ResolvePlan) -> AuditKeys:
    """The audit event's keys for a resolve in which every key resolved as `plan` decided (what
    `record` lists for such a resolve, in the same order)."""
    keys = tuple(
        (key, int(chosen.scope), chosen.version) for key, p in plan.items() if (chosen := p.decision.chosen) is not None
    )
    secret_ids = tuple(p.secret_id for p in plan.values() if p.secret_id)
    return AuditKeys(keys, repo.audit_keys_json(keys), secret_ids, event_keys_bytes(keys, secret_ids))


def _grant_detail(grant_id: str) -> str:
    """A resolve event's detail: the run grant it used (its id; never the token)."""
    return f"grant {grant_id}" if grant_id else ""


def _resolve_event(
    caller: Caller,
    workspace_id: str,
    run_user_id: str,
    execution_id: str,
    workflow_id: str,
    trigger: int,
    *,
    outcome: str,
    keys: tuple[tuple[str, int, int], ...] = (),
    detail: str = "",
    secret_ids: tuple[int, ...] = (),
    failed_keys: tuple[tuple[str, int], ...] = (),
    keys_json: str = "",
    at: datetime | None = None,
) -> repo.AuditRecord:
    """A resolve's audit event: who, for which run, what came of it (never a value)."""
    return repo.AuditRecord(
        principal=caller.principal,
        user_id=run_user_id,
        workspace_id=workspace_id,
        action=RESOLVE_ACTION,
        outcome=outcome,
        keys=keys,
        execution_id=execution_id,
        detail=detail,
        # Buffered events carry their own time: they are written up to 50 ms later.
        at=datetime.now(UTC) if at is None else at,
        workflow_id=workflow_id,
        secret_ids=secret_ids,
        trigger=trigger,
        failed_keys=failed_keys,
        keys_json=keys_json,
    )

"""Resolution precedence (SPEC 2.4): which secret a run uses for a key, or why it cannot."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from service.domain import policy
from service.domain.errors import InvalidArgument
from service.domain.keys import require_id
from service.domain.model import BlockErrorCode, Permission, Scope, SecretRole, Trigger


def run_user_for(trigger: Trigger | None, triggering_user_id: str, workflow_owner_id: str) -> str:
    """The run user: who clicked Run for a manual run, the workflow owner for an automated one.
    Both ids are checked by the one id rule, named as the request names them, whichever is used."""
    require_id("triggering_user_id", triggering_user_id, required=False)
    require_id("workflow_owner_id", workflow_owner_id, required=False)
    if trigger is None:
        raise InvalidArgument("trigger is required: TRIGGER_MANUAL, TRIGGER_API, TRIGGER_WEBHOOK or TRIGGER_SCHEDULE")
    if trigger is Trigger.MANUAL:
        if not triggering_user_id:
            raise InvalidArgument("a manual run needs triggering_user_id (the user who clicked Run)")
        return triggering_user_id
    if not workflow_owner_id:
        raise InvalidArgument(f"an automated run (TRIGGER_{trigger.name}) needs workflow_owner_id (the workflow owner)")
    return workflow_owner_id


def run_user_to_explain(
    trigger: Trigger | None, triggering_user_id: str, workflow_owner_id: str, caller_user_id: str
) -> str:
    """The run user of an explained run: as for a real run, except that an editor explaining a
    manual run without naming who clicks Run explains their own."""
    clicker = triggering_user_id or (caller_user_id if trigger is Trigger.MANUAL else "")
    return run_user_for(trigger, clicker, workflow_owner_id)


def _someone_elses(secret: Candidate, run_user_id: str, caller_user_id: str) -> bool:
    """Another user's personal secret: its existence decides the run, but its metadata (version,
    expiry) is theirs (SPEC 2.2)."""
    return secret.scope is Scope.PERSONAL and run_user_id != caller_user_id


def explained_version(decision: Decision, run_user_id: str, caller_user_id: str) -> int:
    """The version an explanation shows: 0 for another user's personal secret."""
    chosen = decision.chosen
    if chosen is None or _someone_elses(chosen, run_user_id, caller_user_id):
        return 0
    return chosen.version


def explanation(decision: Decision, run_user_id: str, caller_user_id: str) -> str:
    """What an explanation says of a decision; of another user's expired personal secret, that
    it expired but not when."""
    if decision.chosen is not None:
        return f"resolves to the {decision.chosen.scope.name.lower()} secret"
    assert decision.error is not None
    expired = decision.expired
    if expired is not None and _someone_elses(expired, run_user_id, caller_user_id):
        return f"{decision.error.name}: the {expired.scope.name.lower()} secret expired"
    return f"{decision.error.name}: {decision.reason}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A stored secret that could serve a key, as the resolver sees it (no value)."""

    scope: Scope
    key: str
    version: int
    restricted: bool = False
    # The run user's own role on this workspace secret, if any.
    run_user_role: SecretRole | None = None
    # When the secret expires (seconds since the epoch), if it does.
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    key: str
    chosen: Candidate | None
    error: BlockErrorCode | None
    reason: str = ""
    # SECRET_EXPIRED: the secret precedence chose, which expired.
    expired: Candidate | None = None


def decide(
    key: str,
    run_user_permission: Permission | None,
    workspace: Candidate | None,
    personal: Candidate | None,
) -> Decision:
    if run_user_permission is None:
        # A run user who is not (or no longer) a member can use neither scope in this workspace.
        return Decision(key, None, BlockErrorCode.SECRET_NOT_FOUND, "the run user is not a member of the workspace")
    if workspace is not None and policy.can_use_workspace_secret(
        run_user_permission, workspace.restricted, workspace.run_user_role
    ):
        return Decision(key, workspace, None)
    if personal is not None:
        return Decision(key, personal, None)
    if workspace is not None:
        return Decision(
            key,
            None,
            BlockErrorCode.SECRET_NOT_PERMITTED,
            "the workspace secret is restricted and the run user is not one of its members",
        )
    return Decision(
        key, None, BlockErrorCode.SECRET_NOT_FOUND, "no workspace secret and no personal secret of the run user"
    )


def unexpired(decision: Decision, now: float) -> Decision:
    """The decision, or SECRET_EXPIRED when the secret it chose expired by `now`. Expiry comes
    after precedence: an expired workspace secret still wins over a personal one of the same key
    (the run fails rather than silently use another secret)."""
    chosen = decision.chosen
    if chosen is None or chosen.expires_at is None or chosen.expires_at > now:
        return decision
    when = datetime.fromtimestamp(chosen.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Decision(
        decision.key,
        None,
        BlockErrorCode.SECRET_EXPIRED,
        f"the {chosen.scope.name.lower()} secret expired at {when}",
        expired=chosen,
    )


def decide_all(
    keys: Iterable[str],
    run_user_permission: Permission | None,
    candidates: Iterable[Candidate],
    now: float | None = None,
) -> dict[str, Decision]:
    """Decides every key at once from all candidates found for them in both scopes; with `now`,
    a chosen secret that expired by then fails (SECRET_EXPIRED)."""
    workspace: dict[str, Candidate] = {}
    personal: dict[str, Candidate] = {}
    for c in candidates:
        (workspace if c.scope is Scope.WORKSPACE else personal)[c.key] = c
    decided = {k: decide(k, run_user_permission, workspace.get(k), personal.get(k)) for k in keys}
    if now is not None:
        return {k: unexpired(d, now) for k, d in decided.items()}
    return decided


def shadowed_keys(
    run_user_permission: Permission | None, workspace: Iterable[Candidate], personal: Iterable[Candidate]
) -> frozenset[str]:
    """The personal keys that a run of their owner would not use because a workspace secret of
    the same key wins for them. Decided by `decide`, the rule resolution itself applies, so
    ListSecrets, ListReferenceable and a resolve cannot disagree (SPEC 2.4): a restricted
    workspace secret the owner may not use shadows nothing."""
    by_key = {c.key: c for c in workspace}
    shadowed = set()
    for mine in personal:
        chosen = decide(mine.key, run_user_permission, by_key.get(mine.key), mine).chosen
        if chosen is not None and chosen.scope is Scope.WORKSPACE:
            shadowed.add(mine.key)
    return frozenset(shadowed)


def block_error_message(block_id: str, field_path: str, decision: Decision) -> str:
    assert decision.error is not None
    return (
        f"{decision.error.name}: block {block_id!r} field {field_path!r} references secret "
        f"{decision.key!r}: {decision.reason}"
    )

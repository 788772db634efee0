"""Issue 13's pure rules: the usage tally, the in-use guard's violations, and expiry in resolution."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from service.app.cache import ResolveCache
from service.domain.model import BlockErrorCode, Permission, Scope
from service.domain.resolution import Candidate, decide_all, shadowed_keys
from service.domain.usage import (
    IN_USE,
    MAX_GUARD_WORKFLOWS,
    PERSONAL_FALLBACK,
    UsageTally,
    WorkflowUse,
    guard_message,
    guard_violations,
)

T0 = datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC)


def test_tally_sums_per_secret_and_workflow_and_day() -> None:
    tally = UsageTally()
    tally.add("wf1", "e1", T0, [1, 2])
    tally.add("wf1", "e2", T0 + timedelta(seconds=2), [1])  # the next UTC day
    tally.add("wf2", "e3", T0 - timedelta(seconds=5), [1])
    tally.add("wf1", "e0", T0 - timedelta(seconds=9), [1])  # older: not the last execution
    assert tally.last_rows() == [
        (1, "wf1", T0 + timedelta(seconds=2), "e2"),
        (1, "wf2", T0 - timedelta(seconds=5), "e3"),
        (2, "wf1", T0, "e1"),
    ]
    assert tally.day_rows() == [
        (1, "wf1", date(2026, 11, 27), 2),
        (1, "wf1", date(2026, 11, 28), 1),
        (1, "wf2", date(2026, 11, 27), 1),
        (2, "wf1", date(2026, 11, 27), 1),
    ]


def test_tally_merge_adds_counts_and_keeps_the_latest_use() -> None:
    first, second = UsageTally(), UsageTally()
    first.add("wf", "old", T0 - timedelta(hours=1), [7])
    second.add("wf", "new", T0, [7])
    second.add("wf", "new", T0, [7])
    first.merge(second)
    assert first.last_rows() == [(7, "wf", T0, "new")]
    assert first.day_rows() == [(7, "wf", date(2026, 11, 27), 3)]


def test_tally_is_bounded() -> None:
    tally = UsageTally(max_entries=2)
    tally.add("a", "", T0, [1, 2, 3])
    assert len(tally) == 2 and tally.dropped == 1
    tally.add("a", "", T0, [1])  # a known pair still counts
    assert tally.day_rows()[0][3] == 2


def uses(n: int) -> list[WorkflowUse]:
    return [WorkflowUse(f"wf{i}", T0 - timedelta(minutes=i), f"e{i}", 1) for i in range(n)]


def test_guard_lists_workflows_most_recent_first_and_counts_the_rest() -> None:
    found = guard_violations("API", "deleting", uses(25), 25, 0, 30)
    listed = [v for v in found if v.subject.startswith("workflows/")]
    assert [v.subject for v in listed] == [f"workflows/wf{i}" for i in range(MAX_GUARD_WORKFLOWS)]
    assert all(v.type == IN_USE for v in found)
    assert "2026-11-27T23:59:59Z" in listed[0].description and "'e0'" in listed[0].description
    assert "5 more workflow(s)" in found[-1].description


def test_guard_reports_fallbacks_as_a_count_only() -> None:
    found = guard_violations("API", "deleting", [], 0, 3, 30)
    assert [(v.type, v.subject) for v in found] == [(PERSONAL_FALLBACK, "secrets/API")]
    assert "3 workspace member(s)" in found[0].description
    assert guard_violations("API", "deleting", [], 0, 0, 30) == []
    message = guard_message("deleting", {"API": (2, 3)}, 30)
    assert "used by 2 workflow(s) in the last 30 days" in message and "acknowledge_in_use" in message


def test_expired_secret_fails_after_precedence() -> None:
    now = T0.timestamp()
    workspace = Candidate(Scope.WORKSPACE, "K", 3, expires_at=now - 1)
    personal = Candidate(Scope.PERSONAL, "K", 1)
    decided = decide_all(["K"], Permission.WRITE, [workspace, personal], now)["K"]
    # The expired workspace secret still wins over the personal one: the run fails, it does not
    # silently switch secrets.
    assert decided.chosen is None and decided.error is BlockErrorCode.SECRET_EXPIRED
    assert "workspace secret expired at" in decided.reason
    assert shadowed_keys(Permission.WRITE, [workspace], [personal]) == frozenset({"K"})
    later = Candidate(Scope.WORKSPACE, "K", 3, expires_at=now + 60)
    assert decide_all(["K"], Permission.WRITE, [later], now)["K"].chosen == later
    # Without `now` (precedence only), expiry is not looked at.
    assert decide_all(["K"], Permission.WRITE, [workspace])["K"].chosen == workspace


def test_cache_entry_lives_no_longer_than_its_ttl() -> None:
    cache: ResolveCache[str] = ResolveCache()
    cache.enabled = True
    key = cache.key("w", "u", ["K"])
    cache.put(key, "plan", cache.epoch, ttl=0.0)
    assert cache.get(key) is None  # already expired: not stored at all
    cache.put(key, "plan", cache.epoch, ttl=-5)
    assert cache.get(key) is None
    cache.put(key, "plan", cache.epoch, ttl=60)
    assert cache.get(key) == "plan"

"""The resolve cache's bookkeeping, without a database."""

from __future__ import annotations

from service.app.cache import ResolveCache, user_tag, workspace_tag


def cache(max_entries: int = 10_000, max_bytes: int = 32 * 1024 * 1024) -> ResolveCache[str]:
    c: ResolveCache[str] = ResolveCache(max_entries=max_entries, max_bytes=max_bytes)
    c.enabled = True
    return c


def test_hit_after_put_and_invalidation_by_tag() -> None:
    c = cache()
    key = c.key("ws", "u", ["B", "A"])
    assert key == c.key("ws", "u", ["A", "B"])
    c.put(key, "plan", c.epoch, size=10)
    assert c.get(key) == "plan"
    c.invalidate([user_tag("someone-else")])
    assert c.get(key) == "plan"
    c.invalidate([workspace_tag("ws")])
    assert c.get(key) is None and c.bytes == 0


def test_a_read_that_raced_an_invalidation_is_not_stored() -> None:
    c = cache()
    key = c.key("ws", "u", ["A"])
    epoch = c.epoch
    c.invalidate([user_tag("u")])  # a change committed while the read was in flight
    c.put(key, "stale", epoch)
    assert c.get(key) is None


def test_bounded_by_entries_and_bytes_oldest_first() -> None:
    c = cache(max_entries=3, max_bytes=1600)
    keys = [c.key("ws", f"u{i}", ["A"]) for i in range(5)]
    for k in keys[:4]:
        c.put(k, "p", c.epoch, size=10)
    assert len(c) == 3 and c.get(keys[0]) is None
    c.put(keys[4], "big", c.epoch, size=101)  # more than a sixteenth of the budget: not kept
    assert c.get(keys[4]) is None
    for k in keys[1:4]:
        c.put(k, "p", c.epoch, size=100)
    assert c.bytes == 300
    c.max_bytes = 250
    c.put(keys[0], "p", c.epoch, size=10)
    assert c.bytes <= 250 and c.get(keys[0]) == "p"


def test_disabled_cache_serves_nothing() -> None:
    c = cache()
    key = c.key("ws", "u", ["A"])
    c.put(key, "plan", c.epoch)
    c.enabled = False
    assert c.get(key) is None

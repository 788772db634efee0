"""F2 for the fast path of ResolveInputs (issue 15): plans and frames are bounded in bytes.

Plans are keyed by the blocks' bytes (the callers' data) and frames hold responses, so both are
filled here with the largest entries they admit, from many workspaces, and the memory they keep
is measured (tracemalloc): it must stay within what they count, and what they count within
their bounds. A frame counts in the resolve cache's byte budget, with the entry it belongs to.
"""

from __future__ import annotations

import gc
import tracemalloc

from service.api.fastpath import (
    FRAME_BYTES_MAX,
    PLAN_BLOCK_BYTES_MAX,
    Frame,
    PlanCache,
    plan_size,
    render,
)
from service.app.cache import MAX_ATTACHMENTS, ResolveCache

WIDE = "\U0001f600"


def kept_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_plans_stay_within_their_bounds_whatever_the_blocks() -> None:
    plans = PlanCache(workspace_bytes=2 * 1024 * 1024, total_bytes=8 * 1024 * 1024, seen=1024)
    keys = [f"K{i:03d}" + "x" * 250 for i in range(4)]
    tracemalloc.start()
    try:
        before = kept_bytes()
        for w in range(12):
            workspace = f"ws-{w}-" + "w" * 240
            for n in range(40):
                # Two blocks, together as large as a plannable request may be.
                blocks = (
                    bytes([n % 256]) * (PLAN_BLOCK_BYTES_MAX // 2 - 8) + f"{w}:{n}".encode(),
                    b"b" * (PLAN_BLOCK_BYTES_MAX // 2 - 64),
                )
                assert plans.learn(workspace, blocks, keys) is None  # first time: only a hash
                plan = plans.learn(workspace, blocks, keys)
                assert plan is not None and plan.size == plan_size(blocks, keys)
            for n in range(3000):  # requests seen once: hashes only, bounded in number
                plans.learn(workspace, (f"once {n}".encode(),), keys)
            assert plans.bytes <= plans.total_bytes
        held = kept_bytes() - before
        # Too large to plan at all: not even remembered.
        assert plans.learn("ws", (b"x" * (PLAN_BLOCK_BYTES_MAX + 1),), keys) is None
        assert plans.learn("ws", (b"x" * (PLAN_BLOCK_BYTES_MAX + 1),), keys) is None
    finally:
        tracemalloc.stop()
    assert plans.bytes <= 8 * 1024 * 1024
    assert held <= plans.bytes, f"plans hold {held / 2**20:.2f} MiB but count {plans.bytes / 2**20:.2f} MiB"


def test_a_workspace_cannot_push_out_another_workspaces_plans_by_its_own_alone() -> None:
    plans = PlanCache(workspace_bytes=256 * 1024, total_bytes=4 * 1024 * 1024)
    mine = (b"my blocks",)
    plans.learn("mine", mine, ["A"])
    assert plans.learn("mine", mine, ["A"]) is not None
    for n in range(2000):  # another tenant's flood, in its own workspace
        blocks = (f"theirs {n}".encode() * 100,)
        plans.learn("theirs", blocks, ["B"])
        plans.learn("theirs", blocks, ["B"])
    assert plans.get("mine", mine) is not None
    assert plans.get("theirs", mine) is None  # looked up per workspace only


def test_frames_count_in_the_resolve_caches_budget() -> None:
    budget = 16 * 1024 * 1024
    cache: ResolveCache[str] = ResolveCache(max_bytes=budget)
    cache.enabled = True
    tracemalloc.start()
    try:
        before = kept_bytes()
        for e in range(200):
            key = cache.key("ws", f"user-{e}", ["A", "B"])
            kept = cache.put(key, "plan", cache.epoch, size=1000)
            assert kept is not None
            for f in range(MAX_ATTACHMENTS + 5):
                body = bytes([f % 256]) * (FRAME_BYTES_MAX // 8)
                frame = Frame([body[:100], None, body[100:], None, (WIDE * 10).encode()], [(1, 0), (3, 1)], [8, 8])
                kept.attach(("frame", e, f), frame, frame.size)
            assert cache.bytes <= budget
        held = kept_bytes() - before
    finally:
        tracemalloc.stop()
    assert held <= cache.bytes, f"frames hold {held / 2**20:.2f} MiB but the cache counts {cache.bytes / 2**20:.2f}"
    # Dropping the entries drops their frames, and their bytes.
    cache.clear()
    assert cache.bytes == 0


def test_a_frame_refuses_values_of_other_lengths() -> None:
    frame = Frame([b"<", None, b">", None, b"."], [(1, 0), (3, 1)], [2, 3])
    assert render(frame, [b"ab", b"cde"]) == b"<ab>cde."
    assert render(frame, [b"abc", b"cde"]) is None
    assert render(frame, [b"ab", b"cd"]) is None

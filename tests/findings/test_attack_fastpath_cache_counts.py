"""The fast path's look at the resolve cache must not count as a resolve of its own.

`secrets_resolve_cache_hits_total` / `_misses_total` count resolves served from the resolve cache
and resolves that read Postgres with the cache on (README, Metrics). When the fast path of
ResolveInputs (service/app/resolver.py open_framed) looked the entry up and then fell back to the
ordinary path, which looked it up again, one resolve was counted twice: two misses for a single
Postgres read after every change that dropped the entry (and two hits when the entry had no frame
for the blocks yet)."""

from __future__ import annotations

import asyncio

from tests.api import W, set_
from tests.integration import test_fast_path_differential as differential
from tests.integration.test_fast_path_differential import World

world = differential.world  # the fixture, reused


async def test_one_resolve_counts_once_when_the_fast_path_falls_back(world: World) -> None:
    cache = world.server.running.cache
    data = world.request([("b", {"v": "{{W0}} {{W1}}"})], execution="")
    await world.thrice(data, fast=True)  # a plan, a frame, then the fast path

    # The fast path served: one hit, no miss.
    hits, misses = cache.hits, cache.misses
    await world.send(data)
    assert (cache.hits - hits, cache.misses - misses) == (1, 0)

    # A change drops the entry: the next resolve reads Postgres once, one miss.
    await world.api.save(world.ws, world.user, W, set_("W1", "a new value"))
    await asyncio.sleep(0.05)
    hits, misses = cache.hits, cache.misses
    before = world.resolver.fast
    await world.send(data)
    assert world.resolver.fast == before  # the ordinary path answered
    assert (cache.hits - hits, cache.misses - misses) == (0, 1)

"""Finding (issue 15b): a resolve-cache entry's pack can be held without being counted in the
resolve cache's byte budget.

service/app/resolver.py `_open_entry` attaches the entry's `_Openers` with the size of its pack
only when the first `DataKeys.pack` succeeds. `pack` returns None when one of the batch's data
keys is no longer in memory by the time the values were opened one by one (`_open_each` loads
them in turn, and a full DataKeys cache evicts its oldest tenant on each load; a key-tag
notification arriving during the awaits does the same). The openers are then attached with no
pack counted; the next call re-packs (`openers.packed = self._keys.pack(...)`, "as large as
before: the same values, counted already") and the pack, about as large as the entry's values,
is held by the cache without ever entering `entry.size` / `cache.bytes`.

Here a full DataKeys cache is modelled by a bound of one tenant for the first resolve (a
workspace and a personal tenant: loading the second evicts the first), then a large bound again.
"""

from __future__ import annotations

from tests.api import uid
from tests.integration.test_fast_path_differential import World, bench_blocks, entries, world  # noqa: F401


async def test_a_pack_made_after_the_first_attach_is_counted_in_the_cache_budget(world: World) -> None:  # noqa: F811
    keys_in_memory = world.server.running.keys
    keys_in_memory._cache.clear()
    bound = keys_in_memory._max_tenants
    keys_in_memory._max_tenants = 1  # full: each load evicts the oldest tenant
    data = world.request(bench_blocks(), execution=uid("exec"))
    try:
        first = await world.send(data)  # the entry's openers attached; its pack could not be made
    finally:
        keys_in_memory._max_tenants = bound
    keys = tuple(sorted(f"{s}{i}" for s in "PW" for i in range(5)))
    (entry,) = [e for k, e in entries(world.server).items() if k[0] == world.ws and k[2] == keys]
    openers, _ = entry.attached[("openers",)]
    assert openers.packed is None  # the precondition: the first pack was refused
    assert await world.send(data) == first  # packed again now, every data key in memory
    openers, counted = entry.attached[("openers",)]
    assert openers.packed is not None
    # What _open_entry counts for openers whose first pack succeeded: theirs, and the pack's.
    without_pack = 600 + 400 * len(openers.sealed) + 5 * len(openers.audit.keys_json)
    assert counted >= without_pack + openers.packed.size, (
        f"the entry's pack ({openers.packed.size} bytes) is held by the resolve cache but only "
        f"{counted} bytes of its openers are counted in the cache's budget"
    )

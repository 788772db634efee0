"""F2: no memo or cache keyed or filled by caller-controlled data without a bound in bytes.

The walk of block inputs memoised every field path it built (`service.api.inputs._join`, 16,384
entries) and the resolver memoised every serialized reference (`_reference_bytes`, 65,536
entries), whatever their length. Paths grow with the square of the nesting (each level repeats
its parent's path), so a few calls with deep inputs and long names left gigabytes behind: 40
ExplainReferences calls took the server from 56 MiB to 2.9 GiB.

The test drives both RPCs in-process with inputs as deep as allowed (MAX_INPUT_DEPTH) and long
field names, fresh names on every call, and measures what the process keeps (tracemalloc) after
the calls are over: it must not grow with the number of calls. What is still remembered across
calls (field paths and serialized references of ordinary size) is held to its stated bound in
bytes by filling it with the largest entries it admits.
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from typing import Any

import grpc

from service.api import inputs, resolver
from service.domain.limits import MAX_INPUT_DEPTH
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, Api, W, set_, struct, uid
from tests.conftest import metadata

NAME_CHARS = 1000  # each field name; a path at depth d is about d times this long
CHAINS = 3  # nested chains per block
CALLS = 8  # per RPC, after one warm-up call each
MAX_KEPT_BYTES = 8 * 1024 * 1024  # what the calls may leave behind, all of them together


def deep_inputs(tag: str) -> dict[str, Any]:
    """CHAINS chains of objects nested MAX_INPUT_DEPTH deep, a reference at every level, every
    name long and new (so that nothing memoised by an earlier call can be reused)."""
    inputs: dict[str, Any] = {}
    for chain in range(CHAINS):
        node = inputs
        for level in range(MAX_INPUT_DEPTH - 1):
            prefix = f"{tag}-{chain}-{level}-"
            node[prefix + "leaf".ljust(NAME_CHARS - len(prefix), "x")] = "Bearer {{TOKEN}}"
            child: dict[str, Any] = {}
            node[prefix + "node".ljust(NAME_CHARS - len(prefix), "y")] = child
            node = child
        node["last"] = "{{TOKEN}}"
    return inputs


def kept_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_deep_inputs_leave_nothing_behind(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("TOKEN", "token-value"))

    async def resolve() -> None:
        reply = await api.resolve(ws, {"b": deep_inputs(uuid.uuid4().hex)}, user=user)
        assert not reply.blocks[0].HasField("error"), reply.blocks[0].error.message
        assert len(reply.blocks[0].references) == CHAINS * MAX_INPUT_DEPTH

    async def explain() -> None:
        request = spb.ExplainReferencesRequest(
            workspace_id=ws,
            trigger=common.TRIGGER_MANUAL,
            triggering_user_id=user,
            blocks=[common.BlockInputs(block_id="b", inputs=struct(deep_inputs(uuid.uuid4().hex)))],
        )
        reply = await api.store.ExplainReferences(request, metadata=metadata("editor", user))
        assert len(reply.references) == CHAINS * MAX_INPUT_DEPTH

    tracemalloc.start()
    try:
        await resolve()
        await explain()
        before = kept_bytes()
        for _ in range(CALLS):
            await resolve()
            await explain()
        kept = kept_bytes() - before
    finally:
        tracemalloc.stop()
    assert kept < MAX_KEPT_BYTES, f"{2 * CALLS} calls left {kept / 2**20:.1f} MiB behind"


MEMO_BOUND_BYTES = int(3.5 * 1024 * 1024)  # what the comments at the memos promise, each
WIDE = "\U0001f600"  # 4 bytes in UTF-8, 4 in a Python string


def test_each_memo_stays_within_its_bound_in_bytes() -> None:
    """Fill each memo to capacity with the largest entries it admits (every name and key new,
    characters of the widest kind) and measure what it holds. One entry more starts it over."""
    inputs._paths.clear()
    resolver._references.clear()
    tracemalloc.start()
    try:
        before = kept_bytes()
        for n in range(inputs._paths.entries):
            step: inputs.Step | None = None
            for level in range(inputs.MEMO_PATH_DEPTH):
                # `["` + 12 characters + `"]`: 16 a level, MEMO_PATH_CHARS in all.
                step = (step, f"{n:05d}{level}" + WIDE * (inputs.MEMO_PATH_CHARS // inputs.MEMO_PATH_DEPTH - 10))
            assert step is not None and len(inputs.path_of(step)) == inputs.MEMO_PATH_CHARS
        paths = kept_bytes() - before
        assert len(inputs._paths) == inputs._paths.entries  # full
        before = kept_bytes()
        for n in range(resolver._references.entries):
            path = f"{n:06d}" + WIDE * (resolver.MEMO_REFERENCE_CHARS - 6 - 10)
            resolver._reference_bytes((path, f"K{n:09d}", 1, 2**62, 2**30, 2**31 - 1))
        references = kept_bytes() - before
        assert len(resolver._references) == resolver._references.entries
        resolver._reference_bytes(("one more", "K", 1, 1, 0, 1))
        assert len(resolver._references) == 1
    finally:
        tracemalloc.stop()
        inputs._paths.clear()
        resolver._references.clear()
    assert paths < MEMO_BOUND_BYTES, f"the path memo holds {paths / 2**20:.2f} MiB"
    assert references < MEMO_BOUND_BYTES, f"the reference memo holds {references / 2**20:.2f} MiB"

"""The fast path of ResolveInputs answers, byte for byte, what the ordinary path answers (issue 15).

Every request here is sent as raw bytes, three times: the first time it takes the ordinary path
(service/api/resolver.py, the reference implementation) and its blocks are remembered by hash;
the second time too, and the server makes a plan and cuts a frame from the response; the third
time it takes the fast path (service/api/fastpath.py) when the request qualifies. All three
answers must be the same bytes, and the servicer's count of fast resolves says which path
answered. Requests that do not qualify (a block that fails, no reference at all) must never be
answered by the fast path.

Encodings that are not canonical (fields out of order, duplicate map keys, unknown fields,
non-minimal varints, messages sent in parts to be merged) are each their own request: the three
answers to each must be the same bytes, and the same message as the canonical request's answer
(unknown fields aside, which the inputs carry back as they came).

Then the secrets change under the plans: a new value of another length, a key that moves from
personal to workspace, a run whose pins chose the older version, a value that fails to open.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from bench.__main__ import resolve_request
from service.api import mirror
from service.api.fastpath import Frame, Plan
from service.api.resolver import ResolverServicer
from service.app.keys import PACK_KEY_MESSAGES, PackedBatch, SealedBatch
from service.app.resolver import ResolvePlan
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as rpb
from tests.api import ADMIN, Api, P, W, set_, status_of, to_dict, uid
from tests.conftest import Server, metadata

RESOLVE = "/secrets.v1.Resolver/ResolveInputs"
UNICODE_VALUE = "pässwörd-🔑-密码"


def raw_call(channel: grpc.aio.Channel) -> Callable[[bytes], Any]:
    call = channel.unary_unary(RESOLVE, request_serializer=lambda b: b, response_deserializer=lambda b: b)

    async def send(data: bytes) -> bytes:
        reply: bytes = await call(data, metadata=metadata("executor"), timeout=10)
        return reply

    return send


# -- a small protobuf encoder, for the encodings the generated code never produces ----------------


def varint(n: int, pad: int = 0) -> bytes:
    """`n` as a varint, with `pad` needless continuation bytes (non-minimal when pad > 0)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if not n:
            out.append(byte)
            break
        out.append(byte | 0x80)
    if pad:
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes(out)


def ld(number: int, payload: bytes, pad: int = 0) -> bytes:
    return varint(number << 3 | 2, pad) + varint(len(payload), pad) + payload


def vi(number: int, value: int, pad: int = 0) -> bytes:
    return varint(number << 3, pad) + varint(value, pad)


def text(number: int, value: str, pad: int = 0) -> bytes:
    return ld(number, value.encode(), pad)


class Encoder:
    """Struct and friends, hand-encoded: `reverse` puts every message's fields in reverse order,
    `pad` makes every varint non-minimal, `unknown` adds unknown fields to every message but map
    entries (see `test_an_unknown_field_in_a_map_entry`)."""

    def __init__(self, reverse: bool = False, pad: int = 0, unknown: bool = False) -> None:
        self.reverse = reverse
        self.pad = pad
        self.unknown = unknown

    def message(self, *fields: bytes, entry: bool = False) -> bytes:
        parts = list(fields)
        if self.unknown and not entry:
            parts.append(vi(99, 7, self.pad) + text(98, "unknown", self.pad))
        if self.reverse:
            parts.reverse()
        return b"".join(parts)

    def value(self, v: Any) -> bytes:
        p = self.pad
        if v is None:
            return self.message(vi(1, 0, p))
        if isinstance(v, bool):
            return self.message(vi(4, int(v), p))
        if isinstance(v, int | float):
            import struct as st

            return self.message(varint(2 << 3 | 1, p) + st.pack("<d", float(v)))
        if isinstance(v, str):
            return self.message(text(3, v, p))
        if isinstance(v, list):
            # The values of a list, in their order (only its other fields are reversed).
            return self.message(ld(6, self.message(b"".join(ld(1, self.value(x), p) for x in v)), p))
        return self.message(ld(5, self.struct(v), p))

    def struct(self, d: dict[str, Any]) -> bytes:
        p = self.pad
        return self.message(
            *(ld(1, self.message(text(1, k, p), ld(2, self.value(v), p), entry=True), p) for k, v in d.items())
        )

    def block(self, block_id: str, inputs: dict[str, Any]) -> bytes:
        return self.message(text(1, block_id, self.pad), ld(2, self.struct(inputs), self.pad))

    def request(self, fields: dict[str, Any], blocks: list[tuple[str, dict[str, Any]]]) -> bytes:
        p = self.pad
        return self.message(
            text(1, fields["workspace_id"], p),
            text(2, fields["workflow_id"], p),
            text(3, fields["execution_id"], p),
            vi(4, fields["trigger"], p),
            text(5, fields["triggering_user_id"], p),
            b"".join(ld(7, self.block(b, i), p) for b, i in blocks),  # the blocks in their order
        )


# -- the world ------------------------------------------------------------------------------------


@dataclasses.dataclass
class World:
    api: Api
    send: Callable[[bytes], Any]
    resolver: ResolverServicer
    server: Server
    ws: str
    user: str

    def request(self, blocks: list[tuple[str, dict[str, Any]]], execution: str = "exec-1", **fields: Any) -> bytes:
        return rpb.ResolveInputsRequest(
            workspace_id=fields.get("workspace_id", self.ws),
            workflow_id="wf",
            execution_id=execution,
            trigger=common.TRIGGER_MANUAL,
            triggering_user_id=fields.get("user", self.user),
            blocks=[common.BlockInputs(block_id=b, inputs=_struct(i)) for b, i in blocks],
        ).SerializeToString()

    def fields(self, execution: str = "exec-1") -> dict[str, Any]:
        return {
            "workspace_id": self.ws,
            "workflow_id": "wf",
            "execution_id": execution,
            "trigger": common.TRIGGER_MANUAL,
            "triggering_user_id": self.user,
        }

    async def thrice(self, data: bytes, fast: bool, name: str = "") -> bytes:
        """Sends `data` three times: the answers must be the same bytes, the third from the fast
        path exactly when `fast`. (A change notification of another test that lands while a
        resolve reads the database keeps its entry out of the cache: then the frame comes a call
        later, so up to three more calls are made while none was fast.)"""
        before = self.resolver.fast
        answers = [await self.send(data) for _ in range(3)]
        while fast and self.resolver.fast == before and len(answers) < 6:
            answers.append(await self.send(data))
        assert answers[1] == answers[0], f"{name}: the ordinary path answered the same request differently"
        assert all(a == answers[0] for a in answers), f"{name}: the fast path's answer differs from the ordinary path's"
        assert self.resolver.fast - before == (1 if fast else 0), f"{name}: the wrong path answered"
        return answers[0]

    async def twice_known(self, data: bytes, fast: bool) -> bytes:
        """For blocks whose plan exists: the first answer from the ordinary path (which cuts the
        frame), the second from the fast path when `fast`; the same bytes (and as `thrice`, a
        few more calls while none was fast)."""
        before = self.resolver.fast
        answers = [await self.send(data)]
        assert self.resolver.fast == before
        answers.append(await self.send(data))
        while fast and self.resolver.fast == before and len(answers) < 5:
            answers.append(await self.send(data))
        assert all(a == answers[0] for a in answers), "the fast path's answer differs from the ordinary path's"
        assert self.resolver.fast - before == (1 if fast else 0), "the wrong path answered"
        return answers[0]


def _struct(d: dict[str, Any]) -> Any:
    from tests.api import struct

    return struct(d)


@pytest.fixture
async def world(server: Server, channel: grpc.aio.Channel) -> World:
    api = Api(channel)
    resolver = server.running.resolver
    assert resolver is not None
    for _ in range(200):  # the resolve cache serves once its change listener is connected
        if server.running.cache.enabled:
            break
        await asyncio.sleep(0.05)
    assert server.running.cache.enabled
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, *(set_(f"W{i}", f"workspace-value-{i}-" + "x" * i) for i in range(5)))
    await api.save(ws, user, P, *(set_(f"P{i}", f"personal-value-{i}") for i in range(5)))
    await api.save(ws, user, W, set_("U", UNICODE_VALUE), set_("E", "e"))
    await asyncio.sleep(0.1)  # the change notifications of these saves, delivered
    return World(api, raw_call(channel), resolver, server, ws, user)


def bench_blocks() -> list[tuple[str, dict[str, Any]]]:
    return [(b["blockId"], b["inputs"]) for b in resolve_request()["blocks"]]


def message(data: bytes) -> rpb.ResolveInputsResponse:
    reply = rpb.ResolveInputsResponse.FromString(data)
    reply.DiscardUnknownFields()
    return reply


# -- ordinary requests ----------------------------------------------------------------------------


async def test_the_benchmark_request(world: World) -> None:
    request = json_format.ParseDict(resolve_request(), rpb.ResolveInputsRequest())
    request.workspace_id = world.ws
    request.triggering_user_id = world.user
    answer = await world.thrice(request.SerializeToString(), fast=True)
    reply = message(answer)
    assert to_dict(reply.blocks[0].inputs)["headers"]["Authorization"] == "Bearer workspace-value-1-x"
    assert to_dict(reply.blocks[1].inputs)["messages"][1]["content"] == "personal-value-2 personal-value-3"
    assert len(reply.blocks[0].references) + len(reply.blocks[1].references) == 10
    # Again, and again: every later call is a fast one.
    before = world.resolver.fast
    for _ in range(5):
        assert await world.send(request.SerializeToString()) == answer
    assert world.resolver.fast == before + 5


CASES: dict[str, tuple[list[tuple[str, dict[str, Any]]], bool]] = {
    "escapes": ([("b", {"a": "\\{{W0}} is {{W0}}", "b": "\\{{ only escapes", "c": "{{W1}}\\{{"})], True),
    "embedded and repeated": (
        [("b", {"s": "pre {{W0}} mid {{ W1 }}{{W0}} post {{W0}}", "t": "{{W2}}{{W2}}{{W2}}"})],
        True,
    ),
    "nested lists": (
        [("b", {"l": [[["{{W0}}", 1, {"k": ["x", "{{W1}}", [True, None, "{{P0}}"]]}]], "{{W2}}"], "n": 2.5})],
        True,
    ),
    "odd map keys": (
        [
            (
                "b",
                {
                    "": "{{W0}}",
                    "a.b": "{{W1}}",
                    'quo"te': "{{W2}}",
                    "back\\slash": "{{W3}}",
                    "ünï cödé ✓": "{{W4}}",
                    "0": ["{{P0}}"],
                    "[1]": {"": {"x y": "{{P1}}"}},
                    "a": "{{E}}",
                    "ab": "{{E}}x",
                    "aa": "{{U}}",
                },
            )
        ],
        True,
    ),
    "unicode": ([("b", {"ü": "ä {{U}} ö {{W0}} 🔑 {{U}}", "e": "{{E}}", "z": "密码: {{U}}"})], True),
    "several blocks, same keys": (
        [("one", {"v": "{{W0}}"}), ("two", {"v": "{{W0}} {{P4}}"}), ("three", {"nothing": "here"})],
        True,
    ),
    "no blocks": ([], False),
    "blocks without references": ([("b", {"v": "plain", "n": 1})], False),
    "a missing key": ([("b", {"v": "{{W0}} {{NOT_THERE}}"})], False),
    "the failing block first": ([("bad", {"v": "{{NOT_THERE}}"}), ("good", {"v": "{{W0}}"})], False),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_requests_of_every_shape(world: World, case: str) -> None:
    blocks, fast = CASES[case]
    answer = await world.thrice(world.request(blocks, execution=uid("exec")), fast=fast)
    reply = message(answer)
    assert reply.run_user_id == world.user
    if case == "a missing key":
        assert reply.blocks[0].error.key == "NOT_THERE"
    if case == "the failing block first":
        assert reply.blocks[0].HasField("error") and not reply.blocks[1].HasField("error")
    if case == "unicode":
        inputs = to_dict(reply.blocks[0].inputs)
        assert inputs["ü"] == f"ä {UNICODE_VALUE} ö workspace-value-0- 🔑 {UNICODE_VALUE}"
        refs = {(r.field_path, r.start, r.end) for r in reply.blocks[0].references}
        start = len("ä ")
        assert ('["ü"]', start, start + len(UNICODE_VALUE)) in refs  # offsets in code points


async def test_the_same_blocks_for_another_run_user(world: World) -> None:
    other = uid("user")
    await world.api.member(world.ws, other, ADMIN)
    await world.api.save(world.ws, other, P, set_("P0", "the other user's value"))
    blocks = [("b", {"v": "{{P0}} {{W0}}"})]
    mine = await world.thrice(world.request(blocks, execution=uid("exec")), fast=True)
    theirs = await world.twice_known(world.request(blocks, execution=uid("exec"), user=other), fast=True)
    assert "the other user's value" in to_dict(message(theirs).blocks[0].inputs)["v"]
    assert "personal-value-0" in to_dict(message(mine).blocks[0].inputs)["v"]


# -- encodings that are not canonical --------------------------------------------------------------

INPUTS: dict[str, Any] = {
    "url": "https://x/{{W0}}",
    "headers": {"Authorization": "Bearer {{W1}}", "x": ["{{P0}}", 1, None, True]},
    "z": "{{U}}",
}


def encodings(w: World) -> dict[str, bytes]:
    fields = w.fields(execution=uid("exec"))
    canonical = Encoder().request(fields, [("b", INPUTS)])
    e = Encoder()
    request_fields = canonical.split(ld(7, e.block("b", INPUTS)))[0]
    # The same key twice in one Struct: the last one wins.
    duplicate_block = text(1, "b") + ld(
        2,
        e.struct({"url": "{{W4}} first"})
        + e.struct({k: v for k, v in INPUTS.items() if k != "url"})
        + e.struct({"url": INPUTS["url"]}),
    )
    # The inputs in two parts (field 2 twice: merged), and a Value's Struct in two parts.
    first = e.struct({"url": INPUTS["url"]})
    merged_block = (
        text(1, "b") + ld(2, first) + ld(2, e.struct({"headers": INPUTS["headers"]})) + ld(2, e.struct({"z": "{{U}}"}))
    )
    # A map entry that arrives twice is replaced, not merged (map semantics); so a Value's parts
    # are merged inside one entry: its Struct sent twice.
    merged_value = ld(
        1,
        text(1, "headers")
        + ld(
            2,
            ld(5, e.struct({"Authorization": "Bearer {{W1}}"})) + ld(5, e.struct({"x": INPUTS["headers"]["x"]})),
        ),
    )
    merged_value_block = text(1, "b") + ld(2, first + merged_value + e.struct({"z": "{{U}}"}))
    return {
        "canonical": canonical,
        "fields in reverse order": Encoder(reverse=True).request(fields, [("b", INPUTS)]),
        "duplicate map keys": request_fields + ld(7, duplicate_block),
        "unknown fields everywhere": Encoder(unknown=True).request(fields, [("b", INPUTS)]),
        "non-minimal varints": Encoder(pad=2).request(fields, [("b", INPUTS)]),
        "inputs merged from parts": request_fields + ld(7, merged_block),
        "a value merged from parts": request_fields + ld(7, merged_value_block),
        "request fields repeated": text(1, "another-workspace") + canonical + vi(4, fields["trigger"]),
        "unknown fields at the top": vi(50, 1) + canonical + text(51, "x"),
    }


async def test_encodings_that_are_not_canonical(world: World) -> None:
    found = encodings(world)
    assert len(set(found.values())) == len(found)
    reference = message(await world.thrice(found["canonical"], fast=True))
    for name, data in found.items():
        if name == "canonical":
            continue
        if name in ("request fields repeated", "unknown fields at the top"):
            # The blocks are the canonical request's, byte for byte: its plan and frame serve.
            await all_fast(world, data, reference, name)
            continue
        answer = await world.thrice(data, fast=True, name=name)
        assert message(answer) == reference, name
    # The canonical request's answer as the generated code encodes it, too. Its map entries come
    # in upb's order, which differs from process to process: when it is the canonical request's,
    # the blocks are planned already.
    generated = world.request([("b", INPUTS)], execution=uid("exec"))
    blocks = tuple(mirror.ResolveInputsRequest.FromString(generated).blocks)
    if world.resolver.plans.get(world.ws, blocks) is not None:
        await all_fast(world, generated, reference, "generated")
    else:
        assert message(await world.thrice(generated, fast=True)) == reference


async def all_fast(world: World, data: bytes, reference: rpb.ResolveInputsResponse, name: str) -> None:
    """Blocks planned already: three calls, all from the fast path, all the reference's bytes."""
    before = world.resolver.fast
    answers = [await world.send(data) for _ in range(3)]
    assert world.resolver.fast == before + 3, name
    assert answers[0] == answers[1] == answers[2] == reference.SerializeToString(deterministic=True), name


async def test_an_unknown_field_in_a_map_entry(world: World) -> None:
    """The protobuf runtime keeps a map entry holding an unknown field as an unknown field of
    the Struct, whole: its value is not an input any more, so its reference is not resolved, and
    the entry goes back as it came. The other references resolve, on both paths alike."""
    e = Encoder()
    odd_entry = ld(1, text(1, "odd") + ld(2, e.value("{{W0}}")) + vi(3, 1))
    block = text(1, "b") + ld(2, e.struct({"v": "{{W1}}"}) + odd_entry)
    data = Encoder().request(world.fields(uid("exec")), []) + ld(7, block)
    reply = message(await world.thrice(data, fast=True))
    assert to_dict(reply.blocks[0].inputs) == {"v": "workspace-value-1-x"}
    assert [r.key for r in reply.blocks[0].references] == ["W1"]
    assert odd_entry in await world.send(data)


async def test_undecodable_blocks_are_refused_alike(world: World) -> None:
    """Blocks whose bytes do not parse are INVALID_ARGUMENT as a request that does not decode,
    every time (no plan is ever made of them)."""
    fields = world.fields()
    bad = Encoder().request(fields, []) + ld(7, text(1, "b") + ld(2, b"\x0a\x05\x0a\x03\xff\xfe\xc0"))
    for _ in range(3):
        err = await status_of(world.send(bad))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the request could not be decoded" in (err.details() or "")


# -- the secrets change under the plans -----------------------------------------------------------


def entries(server: Server) -> dict[Any, Any]:
    return server.running.cache._entries  # what the resolve cache holds, looked at


async def test_after_secrets_change(world: World) -> None:
    blocks = bench_blocks()
    pinned_run = uid("exec")
    before_change = await world.thrice(world.request(blocks, execution=pinned_run), fast=True)

    # A new version, of another length: the entry and its frames are dropped with it.
    await world.api.save(world.ws, world.user, W, set_("W1", "a new and much longer value of W1"))
    after = await world.twice_known(world.request(blocks, execution=uid("exec")), fast=True)
    assert "Bearer a new and much longer value of W1" in answer_text(after)
    assert after != before_change

    # The run that pinned the older versions keeps them: its pins differ from the entry's choice,
    # so it never takes the fast path, and answers as before.
    again = await world.twice_known(world.request(blocks, execution=pinned_run), fast=False)
    assert again == before_change

    # A key moves from personal to workspace: a workspace secret P0 now shadows the personal one.
    await world.api.save(world.ws, world.user, W, set_("P0", "now a workspace secret"))
    moved = await world.twice_known(world.request(blocks, execution=uid("exec")), fast=True)
    reply = message(moved)
    (ref,) = [r for r in reply.blocks[0].references if r.key == "P0"]
    assert ref.scope == W and to_dict(reply.blocks[0].inputs)["body"]["user"] == "now a workspace secret"


def answer_text(data: bytes) -> str:
    return str(to_dict(message(data).blocks[0].inputs))


async def test_a_tampered_value_is_data_loss_on_both_paths(world: World) -> None:
    """A sealed value that fails to open is DATA_LOSS whichever path opens it; the cache entry's
    sealed bytes are altered in memory, where the fast path reads them."""
    data = world.request([("b", {"v": "{{W3}} and {{W0}}"})], execution=uid("exec"))
    await world.thrice(data, fast=True)
    (entry,) = [e for k, e in entries(world.server).items() if k[0] == world.ws and k[2] == ("W0", "W3")]
    plan: ResolvePlan = entry.plan
    prepared = plan["W3"].prepared
    assert prepared is not None
    object.__setattr__(prepared, "body", bytes([prepared.body[0] ^ 1]) + prepared.body[1:])
    # What the fast path made of the entry's sealed values is made again from the altered ones.
    cache = world.server.running.cache
    _, size = entry.attached.pop(("openers",))
    entry.size -= size
    cache.bytes -= size
    before = world.resolver.fast
    fast_err = await status_of(world.send(data))
    assert world.resolver.fast == before
    assert any(isinstance(a, Frame) for a, _ in (entry.attached or {}).values()), "the fast path was not tried"
    entry.attached = None  # no frame: the ordinary path opens it
    slow_err = await status_of(world.send(data))
    assert fast_err.code() == slow_err.code() == grpc.StatusCode.DATA_LOSS
    assert fast_err.details() == slow_err.details()
    assert "W3" in (fast_err.details() or "")
    cache._drop(next(k for k, e in entries(world.server).items() if e is entry))


async def test_a_frame_that_does_not_fit_is_not_used(world: World) -> None:
    """A value whose length differs from its frame's slot (which the resolve cache's coherence
    should make impossible) sends the call down the ordinary path."""
    data = world.request([("b", {"v": "<{{W2}}>"})], execution=uid("exec"))
    first = await world.thrice(data, fast=True)
    (entry,) = [e for k, e in entries(world.server).items() if k[0] == world.ws and k[2] == ("W2",)]
    frames = [a for a, _ in (entry.attached or {}).values() if isinstance(a, Frame)]
    assert len(frames) == 1
    frames[0].lengths[0] += 1
    before = world.resolver.fast
    assert await world.send(data) == first
    assert world.resolver.fast == before


def test_plan_is_the_fast_path_port() -> None:
    plan = Plan(1, ("A",), 100)
    assert plan.render(object(), []) is None


async def test_no_value_in_any_plan_or_frame(world: World) -> None:
    """What the fast path keeps (plans, frames, the openers and audit keys on cache entries)
    holds names, lengths and sealed bytes, never a value."""
    data = world.request([*bench_blocks(), ("u", {"v": "{{U}} and {{E}}"})], execution=uid("exec"))
    await world.thrice(data, fast=True)
    values = [f"workspace-value-{i}-" + "x" * i for i in range(5)] + [f"personal-value-{i}" for i in range(5)]
    values += [UNICODE_VALUE]
    needles = [v.encode() for v in values]
    kept: list[bytes] = []
    frames = packs = 0
    for entry in entries(world.server).values():
        for attachment, _ in (entry.attached or {}).values():
            if isinstance(attachment, Frame):
                frames += 1
                kept += [p for p in attachment.pieces if p is not None]
            else:
                kept.append(repr(vars(attachment) if hasattr(attachment, "__dict__") else attachment).encode())
                for name in getattr(attachment, "__slots__", ()):
                    kept.append(repr(getattr(attachment, name, None)).encode())
                packed = getattr(attachment, "packed", None)
                if isinstance(packed, PackedBatch):
                    packs += 1
                    kept += [packed.sealed, repr((packed.needs, packed.bounds)).encode()]
    for workspace in world.resolver.plans._workspaces.values():
        for blocks, plan in workspace.plans.items():
            kept += list(blocks)
            kept.append(repr((plan.keys, plan.frame_name)).encode())
    assert frames and packs and kept
    assert not any(v in data for v in needles)  # (no input holds a value either)
    found = [v for v in needles if any(v in k for k in kept)]
    assert not found, "a value is kept by the fast path"


def packed_of(world: World, keys: tuple[str, ...]) -> PackedBatch:
    """The pack of the fast path's openers on the cache entry of `keys` (sorted)."""
    (entry,) = [e for k, e in entries(world.server).items() if k[0] == world.ws and k[2] == keys]
    openers, _ = entry.attached[("openers",)]
    assert isinstance(openers.packed, PackedBatch)
    return openers.packed


async def test_values_are_opened_from_one_pack_and_from_the_stored_values_without_it(world: World) -> None:
    """The fast path opens the values of an entry from one pack (DataKeys.pack: one AES-GCM open
    for the benchmark's ten values, five workspace and five personal, under two data keys). A
    data key no longer in memory, a replaced pack key, or a pack that fails to open sends it to
    the stored values, each opened and checked: the same answer, from the fast path still."""
    data = world.request(bench_blocks(), execution=uid("exec"))
    answer = await world.thrice(data, fast=True)
    keys = tuple(sorted(f"{s}{i}" for s in "PW" for i in range(5)))
    packed = packed_of(world, keys)
    assert len(packed.bounds) == 10 and len(packed.needs) == 2
    keys_in_memory = world.server.running.keys
    opened = keys_in_memory.open_packed(packed)
    assert opened is not None and len(opened) == 10 and all(value in answer for value in opened)
    for tenant, _ in packed.needs:
        keys_in_memory.forget(tenant)  # as a data-key rotation or a reconnected listener does
        assert keys_in_memory.open_packed(packed) is None
    before = world.resolver.fast
    assert await world.send(data) == answer
    assert world.resolver.fast == before + 1
    # Packed again: altered in memory (which only a fault could do), it is not used either.
    packed = packed_of(world, keys)
    assert keys_in_memory.open_packed(packed) is not None
    packed.sealed = packed.sealed[:-1] + bytes([packed.sealed[-1] ^ 1])
    assert keys_in_memory.open_packed(packed) is None
    assert await world.send(data) == answer
    # Nor after the pack key is replaced (PACK_KEY_MESSAGES packs sealed).
    packed = packed_of(world, keys)
    assert keys_in_memory.open_packed(packed) is not None
    keys_in_memory._packs_sealed = PACK_KEY_MESSAGES
    keys_in_memory.pack(SealedBatch(()), [])
    assert keys_in_memory.open_packed(packed) is None
    assert await world.send(data) == answer
    assert world.resolver.fast == before + 3
    assert keys_in_memory.open_packed(packed_of(world, keys)) is not None

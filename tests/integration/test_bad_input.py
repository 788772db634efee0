"""Hostile and malformed input: the right status, nothing stored, and a server that stays healthy."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain import templates
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, Api, W, set_, status_of, uid
from tests.conftest import metadata


@pytest.fixture
def api(channel: grpc.aio.Channel) -> Api:
    return Api(channel)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def deep_request(depth: int) -> bytes:
    """A ResolveInputsRequest whose one input nests `depth` lists deep, encoded by hand: protobuf
    itself refuses to build messages past its depth limit."""
    value = field(3, b"{{K}}")  # Value.string_value
    for _ in range(depth):
        value = field(6, field(1, value))  # Value.list_value -> ListValue.values
    struct = field(1, field(1, b"a") + field(2, value))  # Struct.fields entry
    block = field(1, b"b") + field(2, struct)
    return field(1, b"ws") + varint(4 << 3) + varint(1) + field(5, b"u") + field(7, block)


async def raw_call(
    channel: grpc.aio.Channel, method: str, payload: bytes, md: list[tuple[str, str]]
) -> grpc.aio.AioRpcError:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return await status_of(call(payload, metadata=md, timeout=10))


async def assert_healthy(api: Api, channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("OK", "fine"))
    assert not (await api.resolve(ws, {"b": {"v": "{{OK}}"}}, user=user)).blocks[0].HasField("error")


async def test_invalid_utf8_is_invalid_argument(api: Api, channel: grpc.aio.Channel) -> None:
    good = spb.ListSecretsRequest(workspace_id="wsABC").SerializeToString()
    err = await raw_call(
        channel, "/secrets.v1.SecretStore/ListSecrets", good.replace(b"ABC", b"A\xff\xfe"), metadata("editor", "u")
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in (err.details() or "")
    err = await raw_call(channel, "/secrets.v1.Resolver/ResolveInputs", b"\x0a\xff", metadata("executor"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_healthy(api, channel)


@pytest.mark.parametrize("depth", [40, 99, 150, 5000])
async def test_over_deep_inputs_are_invalid_argument(api: Api, channel: grpc.aio.Channel, depth: int) -> None:
    err = await raw_call(channel, "/secrets.v1.Resolver/ResolveInputs", deep_request(depth), metadata("executor"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    await assert_healthy(api, channel)


async def test_depth_at_the_limit_is_fine(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary(
        "/secrets.v1.Resolver/ResolveInputs",
        request_serializer=lambda b: b,
        response_deserializer=rpb.ResolveInputsResponse.FromString,
    )
    reply = await call(deep_request(31), metadata=metadata("executor"), timeout=10)
    # Decoded and walked to the bottom: the reference there was found (and is not stored).
    assert reply.blocks[0].error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND
    assert reply.blocks[0].error.field_path == "a" + "[0]" * 31


async def test_oversized_messages_are_refused(api: Api, channel: grpc.aio.Channel) -> None:
    err = await status_of(
        api.store.ImportDotenv(
            spb.ImportDotenvRequest(workspace_id="ws", scope=W, content="A=" + "x" * (5 * 1024 * 1024)),
            metadata=metadata("editor", "u"),
        )
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_healthy(api, channel)


async def test_too_many_blocks_references_or_keys(api: Api, channel: grpc.aio.Channel) -> None:
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    for blocks in (
        {f"b{i}": {"v": "x"} for i in range(501)},
        {"b": {"v": "{{K}}" * 2001}},
        {"b": {f"f{i}": "{{K" + str(i) + "}}" for i in range(501)}},
    ):
        err = await status_of(api.resolve(ws, blocks, user=user))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_healthy(api, channel)


async def test_nul_bytes_are_invalid_argument_and_nothing_is_stored(api: Api, channel: grpc.aio.Channel) -> None:
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    for change in (set_("K", "a\x00b"), set_("K\x00", "v"), spb.SecretChange(key="K", rename_to="L\x00")):
        err = await status_of(api.save(ws, user, W, change, expected=0))
        assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    err = await status_of(api.list("ws\x00x", user))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await api.list(ws, user)).workspace_secrets == []
    await assert_healthy(api, channel)


async def test_deadlines_are_honoured(api: Api, channel: grpc.aio.Channel) -> None:
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    text = "".join(f"K{i}=v{i}\n" for i in range(5000))
    err = await status_of(
        api.store.ImportDotenv(
            spb.ImportDotenvRequest(workspace_id=ws, scope=W, content=text),
            metadata=metadata("editor", user),
            timeout=0.001,
        )
    )
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await assert_healthy(api, channel)


json_leaf = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
reference_text = st.lists(
    st.sampled_from(["{{", "}}", "{{K}}", "{{ K }}", "\\{{", "{", "}", " ", "K", "x", "\\", "{{ bad key }}", "é"]),
    max_size=12,
).map("".join)


KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def naive_parse(text: str) -> tuple[list[str], list[str]] | None:
    """SPEC 2.3 read character by character, as an independent oracle for the regex parser."""
    parts: list[str] = []
    keys: list[str] = []
    current: list[str] = []
    changed = False
    i = 0
    while i < len(text):
        if text.startswith("\\{{", i):
            current.append("{{")
            i += 3
            changed = True
            continue
        if text.startswith("{{", i):
            j = i + 2
            while j < len(text) and text[j] == " ":
                j += 1
            k = j
            while k < len(text) and text[k] in KEY_CHARS:
                k += 1
            m = k
            while m < len(text) and text[m] == " ":
                m += 1
            if 1 <= k - j <= 256 and text.startswith("}}", m):
                parts.append("".join(current))
                current = []
                keys.append(text[j:k])
                i = m + 2
                changed = True
                continue
        current.append(text[i])
        i += 1
    if not changed:
        return None
    parts.append("".join(current))
    return parts, keys


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), reference_text))
def test_reference_engine_agrees_with_a_naive_reading_on_any_text(text: str) -> None:
    template = templates.parse(text)
    expected = naive_parse(text)
    if expected is None:
        assert template is None
    else:
        assert template is not None
        assert (list(template.parts), [r.key for r in template.references]) == expected
        parts, keys = expected
        rendered = parts[0] + "".join(f"<{key}>{parts[n + 1]}" for n, key in enumerate(keys))
        assert template.render(lambda key: f"<{key}>") == rendered


@pytest.fixture(scope="module")
def fuzz_world() -> dict[str, Any]:
    return {}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.dictionaries(st.text(min_size=1, max_size=10), st.one_of(json_values, reference_text), max_size=6))
async def test_arbitrary_inputs_resolve_or_fail_per_block_never_break_the_server(
    api: Api, fuzz_world: dict[str, Any], inputs: dict[str, Any]
) -> None:
    if "ws" not in fuzz_world:
        fuzz_world["ws"], fuzz_world["user"] = uid("ws"), uid("user")
        await api.member(fuzz_world["ws"], fuzz_world["user"], ADMIN)
        await api.save(fuzz_world["ws"], fuzz_world["user"], W, set_("K", "value-of-k"))
    reply = await api.resolve(fuzz_world["ws"], {"b": inputs}, user=fuzz_world["user"])
    block = reply.blocks[0]
    if block.HasField("error"):
        assert block.error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND
    else:
        assert isinstance(block.inputs, struct_pb2.Struct)
        assert all(r.key == "K" for r in block.references)


async def test_the_server_is_still_healthy_after_all_that(api: Api, channel: grpc.aio.Channel) -> None:
    await assert_healthy(api, channel)

"""Reference semantics (SPEC 2.3) and resolution order (SPEC 2.4) through the real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import secret_store_pb2 as spb
from tests.api import ADMIN, READ, Api, P, W, set_, to_dict, uid
from tests.conftest import metadata


@pytest.fixture
def api(channel: grpc.aio.Channel) -> Api:
    return Api(channel)


@pytest.fixture
async def world(api: Api) -> tuple[str, str]:
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("TOKEN", "tok"), set_("HOST", "h.example"), set_("LOOP", "{{TOKEN}}"))
    return ws, user


async def resolved(api: Api, ws: str, user: str, inputs: dict[str, object]) -> dict[str, object]:
    reply = await api.resolve(ws, {"b": inputs}, user=user)
    assert not reply.blocks[0].HasField("error"), reply.blocks[0].error.message
    return to_dict(reply.blocks[0].inputs)


async def test_spaces_inside_braces_whole_and_embedded(api: Api, world: tuple[str, str]) -> None:
    ws, user = world
    out = await resolved(api, ws, user, {"a": "{{ TOKEN }}", "b": "Bearer {{TOKEN  }}", "c": "{{  HOST}}:443"})
    assert out == {"a": "tok", "b": "Bearer tok", "c": "h.example:443"}


async def test_escapes_and_invalid_keys_are_left_alone(api: Api, world: tuple[str, str]) -> None:
    ws, user = world
    out = await resolved(
        api,
        ws,
        user,
        {
            "esc": "\\{{TOKEN}}",
            "dash": "{{NOT-A-KEY}}",
            "dot": "{{a.b}}",
            "empty": "{{}}",
            "open": "{{TOKEN",
            "mixed": "\\{{TOKEN}} and {{TOKEN}}",
        },
    )
    assert out == {
        "esc": "{{TOKEN}}",
        "dash": "{{NOT-A-KEY}}",
        "dot": "{{a.b}}",
        "empty": "{{}}",
        "open": "{{TOKEN",
        "mixed": "{{TOKEN}} and tok",
    }


async def test_substitution_is_a_single_pass(api: Api, world: tuple[str, str]) -> None:
    ws, user = world
    out = await resolved(api, ws, user, {"v": "{{LOOP}}", "w": "x{{LOOP}}y"})
    assert out == {"v": "{{TOKEN}}", "w": "x{{TOKEN}}y"}


async def test_object_keys_are_never_substituted(api: Api, world: tuple[str, str]) -> None:
    ws, user = world
    out = await resolved(api, ws, user, {"{{TOKEN}}": "{{TOKEN}}"})
    assert out == {"{{TOKEN}}": "tok"}


async def test_deep_lists_and_objects_with_field_paths(api: Api, world: tuple[str, str]) -> None:
    ws, user = world
    inputs = {
        "headers": {"Authorization": "Bearer {{TOKEN}}", "X-Api.Key": "{{TOKEN}}"},
        "messages": [{"content": "a"}, {"content": "b"}, {"content": "host {{HOST}}"}],
        "deep": [[[{"x": ["{{TOKEN}}"]}]]],
        "n": 1,
        "t": True,
        "z": None,
    }
    reply = await api.resolve(ws, {"b": inputs}, user=user)
    block = reply.blocks[0]
    assert to_dict(block.inputs)["deep"] == [[[{"x": ["tok"]}]]]
    assert to_dict(block.inputs)["z"] is None and to_dict(block.inputs)["t"] is True
    assert [(r.field_path, r.key, r.scope, r.version) for r in block.references] == [
        ("deep[0][0][0].x[0]", "TOKEN", W, 1),
        ("headers.Authorization", "TOKEN", W, 1),
        ('headers["X-Api.Key"]', "TOKEN", W, 1),
        ("messages[2].content", "HOST", W, 1),
    ]
    missing = await api.resolve(ws, {"b": {"messages": [{}, {}, {"content": "{{GONE}}"}]}}, user=user)
    assert missing.blocks[0].error.field_path == "messages[2].content"


async def test_references_list_what_was_used_and_nothing_more(api: Api, world: tuple[str, str]) -> None:
    ws, user = world
    reply = await api.resolve(
        ws, {"one": {"a": "{{TOKEN}}", "b": "plain"}, "two": {"c": "{{HOST}}{{HOST}}", "d": "\\{{TOKEN}}"}}, user=user
    )
    one, two = reply.blocks
    assert [(r.field_path, r.key) for r in one.references] == [("a", "TOKEN")]
    assert [(r.field_path, r.key) for r in two.references] == [("c", "HOST"), ("c", "HOST")]


@pytest.mark.parametrize(
    ("trigger", "run_user"),
    [
        (common.TRIGGER_MANUAL, "clicker"),
        (common.TRIGGER_API, "owner"),
        (common.TRIGGER_WEBHOOK, "owner"),
        (common.TRIGGER_SCHEDULE, "owner"),
    ],
)
async def test_each_trigger_uses_its_run_user(api: Api, trigger: int, run_user: str) -> None:
    ws = uid("ws")
    users = {"clicker": uid("clicker"), "owner": uid("owner")}
    for name, user in users.items():
        await api.member(ws, user, READ)
        await api.save(ws, user, P, set_("WHO", name))
    reply = await api.resolve(ws, {"b": {"v": "{{WHO}}"}}, trigger=trigger, user=users["clicker"], owner=users["owner"])
    assert to_dict(reply.blocks[0].inputs) == {"v": run_user}
    assert reply.run_user_id == users[run_user]


async def test_automated_run_whose_owner_left_the_workspace_fails_its_blocks(api: Api) -> None:
    ws, owner, clicker = uid("ws"), uid("owner"), uid("clicker")
    await api.member(ws, clicker, ADMIN)
    await api.save(ws, clicker, W, set_("SHARED", "v"))
    await api.save(ws, owner, P, set_("SHARED", "mine"), expected=0)  # a personal secret alone is no membership
    reply = await api.resolve(
        ws, {"b": {"v": "{{SHARED}}"}}, trigger=common.TRIGGER_SCHEDULE, user=clicker, owner=owner
    )
    error = reply.blocks[0].error
    assert error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_FOUND and "not a member" in error.message


async def test_restricted_secret_is_not_permitted_and_other_blocks_still_resolve(api: Api) -> None:
    ws, boss, user = uid("ws"), uid("boss"), uid("user")
    await api.member(ws, boss, ADMIN)
    await api.member(ws, user, READ)
    await api.save(ws, boss, W, set_("LOCKED", "l"), set_("OPEN", "o"))
    await api.store.UpdateSecretDetails(
        spb.UpdateSecretDetailsRequest(workspace_id=ws, scope=W, key="LOCKED", restricted=True),
        metadata=metadata("editor", boss),
    )
    reply = await api.resolve(
        ws,
        {"first": {"v": "{{OPEN}}"}, "locked": {"auth": {"token": "{{LOCKED}}"}}, "last": {"v": "{{OPEN}}!"}},
        user=user,
    )
    first, locked, last = reply.blocks
    assert to_dict(first.inputs) == {"v": "o"} and to_dict(last.inputs) == {"v": "o!"}
    assert locked.error.code == common.BLOCK_ERROR_CODE_SECRET_NOT_PERMITTED
    assert (locked.error.key, locked.error.field_path) == ("LOCKED", "auth.token")
    assert locked.error.message.startswith("SECRET_NOT_PERMITTED") and "'locked'" in locked.error.message
    # With a personal secret of the same key, the run falls back to it instead.
    await api.save(ws, user, P, set_("LOCKED", "mine"))
    reply = await api.resolve(ws, {"b": {"v": "{{LOCKED}}"}}, user=user)
    assert to_dict(reply.blocks[0].inputs) == {"v": "mine"} and reply.blocks[0].references[0].scope == P


async def test_blocks_come_back_in_request_order_with_their_ids(api: Api, world: tuple[str, str]) -> None:
    ws, user = world
    reply = await api.resolve(ws, {f"blk{i}": {"v": "{{TOKEN}}" if i % 2 else "{{NONE}}"} for i in range(6)}, user=user)
    assert [b.block_id for b in reply.blocks] == [f"blk{i}" for i in range(6)]
    assert [b.HasField("error") for b in reply.blocks] == [True, False] * 3


VECTORS = Path(__file__).resolve().parents[2] / "clients" / "testdata" / "redaction_vectors.json"


@pytest.mark.parametrize("case", json.loads(VECTORS.read_text(encoding="utf-8"))["cases"], ids=lambda c: str(c["name"]))
async def test_references_say_where_each_value_is(api: Api, case: dict[str, Any]) -> None:
    """The shared client vectors (clients/testdata/redaction_vectors.json) through the server:
    resolved inputs, and each reference's offsets in code points."""
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, *(set_(key, value) for key, value in case["values"].items()))
    reply = await api.resolve(ws, {"b": case["inputs"]}, user=user)
    block = reply.blocks[0]
    assert not block.HasField("error"), block.error.message
    assert to_dict(block.inputs) == case["resolved"]
    assert [
        {"field_path": r.field_path, "key": r.key, "start": r.start, "end": r.end} for r in block.references
    ] == case["references"]

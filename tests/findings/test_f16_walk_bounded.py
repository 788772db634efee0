"""Finding 16 / the first class, from the attack after the fixes: one 4 MiB resolve of 300,000
fields held the event loop (health checks included) for 0.57 s, and one string of a million
`\\{{` for 0.43 s. The walk now stops past MAX_INPUT_VALUES_PER_REQUEST values and a string past
MAX_BRACES_PER_STRING `{{`, with RESOURCE_EXHAUSTED, before the Python work grows further.
"""

from __future__ import annotations

import grpc

from service.domain.limits import MAX_BRACES_PER_STRING, MAX_INPUT_VALUES_PER_REQUEST
from tests.api import ADMIN, Api, W, set_, status_of, to_dict, uid


async def test_f16_a_resolve_past_the_values_cap_is_refused(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("K", "v"))
    many = {f"f{i}": i for i in range(MAX_INPUT_VALUES_PER_REQUEST)}
    many["ref"] = "{{K}}"  # one past the cap, with the nested object itself
    err = await status_of(api.resolve(ws, {"b": {"o": many}}, user=user))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "values" in (err.details() or "")
    fits = {f"f{i}": i for i in range(MAX_INPUT_VALUES_PER_REQUEST - 10)}
    fits["ref"] = "{{K}}"
    reply = await api.resolve(ws, {"b": fits}, user=user)
    assert to_dict(reply.blocks[0].inputs)["ref"] == "v"


async def test_f16_a_string_past_the_braces_cap_is_refused(channel: grpc.aio.Channel) -> None:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    err = await status_of(api.resolve(ws, {"b": {"s": "\\{{" * (MAX_BRACES_PER_STRING + 1)}}, user=user))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

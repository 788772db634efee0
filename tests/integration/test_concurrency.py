"""Concurrent saves against one revision: exactly one wins, the rest are ABORTED, and the final
state is the winners applied in order (a property test over random batches and interleavings)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api import ADMIN, Api, W, set_, to_dict, uid

KEYS = ["K0", "K1", "K2", "K3"]
batch = st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True)
rounds = st.lists(st.lists(batch, min_size=2, max_size=8), min_size=1, max_size=4)


@pytest.fixture
def api(channel: grpc.aio.Channel) -> Api:
    return Api(channel)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds)
async def test_exactly_one_concurrent_save_wins_and_the_state_is_the_winners_in_order(
    api: Api, plan: list[list[list[str]]]
) -> None:
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    model: dict[str, str] = {}
    revision = 0
    for r, candidates in enumerate(plan):
        batches = [{key: f"r{r}-b{b}-{key}" for key in keys} for b, keys in enumerate(candidates)]
        results = await asyncio.gather(
            *(api.save(ws, user, W, *(set_(k, v) for k, v in b.items()), expected=revision) for b in batches),
            return_exceptions=True,
        )
        winners = [i for i, res in enumerate(results) if not isinstance(res, BaseException)]
        assert len(winners) == 1, results
        for res in results:
            if isinstance(res, BaseException):
                assert isinstance(res, grpc.aio.AioRpcError) and res.code() == grpc.StatusCode.ABORTED, res
                assert f"current revision {revision + 1}" in (res.details() or "")
        model.update(batches[winners[0]])
        revision += 1

    listing = await api.list(ws, user)
    assert listing.workspace_revision == revision
    assert sorted(s.key for s in listing.workspace_secrets) == sorted(model)
    reply = await api.resolve(ws, {"b": {k: "{{" + k + "}}" for k in model}}, user=user)
    assert to_dict(reply.blocks[0].inputs) == model

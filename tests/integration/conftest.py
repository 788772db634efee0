"""Integration fixtures: an Api whose every response is recorded and searched for values."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.api import Api
from tests.conftest import Server
from tests.leaks import canary, find_canaries
from tests.recording import ResponseRecorder


class Canaries:
    """Values saved by a test module; none may come back in any response it receives."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def __call__(self, label: str = "canary") -> str:
        value = canary(label)
        self.values.append(value)
        return value


@pytest.fixture(scope="module")
def canaries() -> Canaries:
    return Canaries()


@pytest.fixture(scope="module")
async def recorded_api(server: Server, canaries: Canaries) -> AsyncIterator[Api]:
    """An Api on a channel that records every response; at the end of the module, no response
    may contain any canary value the module saved (in raw, base64, hex, URL or JSON form)."""
    recorder = ResponseRecorder()
    async with grpc.aio.insecure_channel(server.address, interceptors=[recorder]) as channel:
        yield Api(channel)
    if canaries.values:
        assert recorder.blobs, "nothing was recorded"
        leaked = find_canaries(recorder.everything(), canaries.values)
        assert leaked == [], f"{len(leaked)} saved values came back in responses"

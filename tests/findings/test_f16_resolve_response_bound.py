"""F16 (resolve part): the size of a resolve response is known before it is rendered.

Values are up to 64 KiB and a request may hold 2,000 references, so a 14 KB request could make
the server build a 128 MB response, then refuse to send it (past MAX_MESSAGE_BYTES). The server
must size the response from the values' lengths times their uses (and the inputs, paths and
keys) first, and answer RESOURCE_EXHAUSTED at once, without building it.

Measured in-process (the `server` fixture runs in this process): the peak resident memory during
the call (VmHWM, reset through /proc/self/clear_refs) must stay far below the 128 MB the response
would take. At the edge, 63 values of 64 KiB still fit in one response and 64 do not.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.inputs import PathSizes, Step, path_of
from service.domain.limits import MAX_MESSAGE_BYTES, MAX_REFERENCES_PER_REQUEST
from tests.api import ADMIN, Api, W, set_, status_of, uid

VALUE_BYTES = 64 * 1024
KEYS = ("BIG_A", "BIG_B", "BIG_C", "BIG_D")


def resident_peak_kib() -> int:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert match
    return int(match.group(1))


def reset_resident_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.fixture
async def big(channel: grpc.aio.Channel) -> tuple[Api, str, str]:
    api = Api(channel)
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, *(set_(key, key[-1] * VALUE_BYTES) for key in KEYS))
    return api, ws, user


async def test_a_small_request_for_a_huge_response_is_refused_at_once(big: tuple[Api, str, str]) -> None:
    api, ws, user = big
    # 2,000 references to 64 KiB values: about 14 KB of request, 128 MiB of response.
    inputs = {f"f{i:04d}": "{{" + KEYS[i % len(KEYS)] + "}}" for i in range(MAX_REFERENCES_PER_REQUEST)}
    measured = reset_resident_peak()
    before = resident_peak_kib()
    err = await status_of(api.resolve(ws, {"b": inputs}, user=user))
    grew_mib = (resident_peak_kib() - before) / 1024
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    if measured:
        assert grew_mib < 32, f"the server's peak memory grew by {grew_mib:.0f} MiB for a refused response"
    # The service's own answer (not gRPC's "Sent message larger than max" after the fact).
    details = err.details() or ""
    assert f"{MAX_MESSAGE_BYTES:,}" in details and "resolve fewer blocks" in details
    assert "A" * 16 not in details  # never a value
    if not measured:
        pytest.skip("/proc/self/clear_refs is not writable here: the memory bound was not measured")


@pytest.mark.parametrize(("uses", "fits"), [(63, True), (64, False)])
async def test_at_the_edge_the_real_size_decides(big: tuple[Api, str, str], uses: int, fits: bool) -> None:
    api, ws, user = big
    inputs = {f"f{i:02d}": "{{BIG_A}}" for i in range(uses)}
    if fits:
        reply = await api.resolve(ws, {"b": inputs}, user=user)
        assert reply.ByteSize() <= MAX_MESSAGE_BYTES
        assert len(reply.blocks[0].references) == uses
    else:
        err = await status_of(api.resolve(ws, {"b": inputs}, user=user))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        assert f"{MAX_MESSAGE_BYTES:,}" in (err.details() or "")


async def test_failing_blocks_count_as_their_errors_not_their_values(big: tuple[Api, str, str]) -> None:
    """A block that fails sends its error, not its inputs: 100 blocks that each use a 64 KiB
    value twice and also a missing key fit easily."""
    api, ws, user = big
    blocks = {f"b{i:03d}": {"x": "{{BIG_A}}", "y": "{{BIG_B}}", "z": "{{MISSING}}"} for i in range(100)}
    reply = await api.resolve(ws, blocks, user=user)
    assert all(b.HasField("error") for b in reply.blocks)


@settings(max_examples=200)
@given(st.lists(st.one_of(st.text(max_size=6), st.integers(0, 10**6)), min_size=1, max_size=8))
def test_path_sizes_are_the_utf8_lengths_of_the_paths(names: list[str | int]) -> None:
    """The response is sized with each field path's length, computed without building it."""
    step: Step | None = None
    for i, name in enumerate(names):
        step = (step, name if i else str(name))  # the first step is always an object field
    assert step is not None
    assert PathSizes()(step) == len(path_of(step).encode("utf-8"))

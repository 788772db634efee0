"""secrets.v1.Resolver: what executors call just before a block runs.

ResolveInputs takes its request as service/api/mirror.py parses it (the blocks still bytes) and
answers bytes. Blocks resolved before, whose response frame the resolve cache holds, take the
fast path (service/api/fastpath.py); everything else the ordinary path below, the reference
implementation: parse the blocks, copy them into the response, walk and render in place,
serialize (deterministically: map entries in a fixed order, so that a frame cut from one
response is the same bytes as the next).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError

from service.api import convert, mirror
from service.api.common import caller
from service.api.fastpath import PlanCache, cut_frame
from service.api.inputs import BoundedMemo, PathSizes, Site, Walk, walk_blocks
from service.app.context import Caller
from service.app.grants import GrantService
from service.app.resolver import FrameKeeper
from service.app.runs import BlockFailure, Reference, Run, RunRequest, RunResolver
from service.domain.errors import InvalidArgument, ResourceExhausted
from service.domain.limits import MAX_INPUT_DEPTH, MAX_MESSAGE_BYTES
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as pb
from service.gen.secrets.v1 import resolver_pb2_grpc as pb_grpc

# Sizing the response before rendering it (F16), in bytes on the wire, all upper bounds:
# - a ResolvedReference besides its field path and key: the tags and length prefixes of the entry
#   and of its two strings (1 + 4 each), scope (1 + 1), version (1 + 10), start and end (1 + 5 each);
REFERENCE_OVERHEAD_BYTES: Final = 40
# - how much the length prefixes around one rewritten string can grow: a prefix of a message under
#   256 MiB grows by 3 bytes at most, and a string at nesting depth d sits in at most 3 d + 3
#   length-delimited messages (each Struct level is an entry, a Value and a Struct);
PREFIX_GROWTH_BYTES_PER_LEVEL: Final = 9
PREFIX_GROWTH_BYTES_PER_STRING: Final = 9
# - a field path, from the inputs that hold it: a name's bytes at most twice over (escaped `\` and
#   `"`) plus `["` `"]`, or a list index as `[n]`, for each level.
PATH_BYTES_PER_LEVEL: Final = 12
# A response whose bound is past MAX_MESSAGE_BYTES by less than this is rendered and measured
# (so a response of up to three times the limit may be built, then refused); one past it by more
# is refused at once (see _check_response_size for why its real size is then past the limit too).
MEASURED_BAND_BYTES: Final = 2 * MAX_MESSAGE_BYTES

# Serialized `BlockResult.references` entries, remembered: the same inputs resolve to the same
# paths, versions and offsets run after run. Only entries whose path and key hold at most
# MEMO_REFERENCE_CHARS characters together are kept: an entry (key tuple, strings, bytes) takes
# about 1.3 KiB at most, in 4-byte characters, and the memo stays under 3.5 MiB
# (tests/findings/test_f02_*.py measures it).
MEMO_REFERENCE_CHARS: Final = 96
_references: BoundedMemo[tuple[str, str, int, int, int, int], bytes] = BoundedMemo(2048)


class ResolverServicer(pb_grpc.ResolverServicer):
    """Converts protobuf in and out; the run's rules are service/app/runs.py's."""

    # Answered with bytes, from the request as the mirror parses it (service/api/registry.py).
    WIRE_METHODS: Final = {"ResolveInputs": mirror.ResolveInputsRequest}

    def __init__(self, runs: RunResolver, grants: GrantService, plans: PlanCache | None = None) -> None:
        self._runs = runs
        self._grants = grants
        self.plans = plans if plans is not None else PlanCache()
        self.fast = 0  # resolves answered by the fast path

    async def ResolveInputs(  # type: ignore[override]  # bytes out: WIRE_METHODS
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        who = caller()
        run = await self._runs.start(
            who,
            RunRequest(
                request.workspace_id,
                request.workflow_id,
                request.execution_id,
                request.trigger,
                request.triggering_user_id,
                request.workflow_owner_id,
                request.grant,
                request.latest_values,
            ),
        )
        blocks: tuple[bytes, ...] = tuple(request.blocks)
        # Looked up once the run is authorised, among its own workspace's plans only.
        plan = self.plans.get(run.workspace_id, blocks)
        if plan is not None:
            response = await self._runs.resolve_framed(who, run, plan.keys, plan)
            if response is not None:
                self.fast += 1
                return response
        return await self._resolve(who, run, request, blocks)

    async def _resolve(self, who: Caller, run: Run, request: Any, blocks: tuple[bytes, ...]) -> bytes:
        """The ordinary path; it also makes the plan and the frame of blocks seen again."""
        response = pb.ResolveInputsResponse(run_user_id=run.run_user_id)
        for block in _parse_blocks(request, blocks):
            # The response starts as a copy of the inputs; only strings with references change.
            response.blocks.add(block_id=block.block_id).inputs.CopyFrom(block.inputs)
        walk = walk_blocks([(b.block_id, b.inputs) for b in response.blocks])
        writer = _ResponseWriter(response, walk)
        await self._runs.resolve(who, run, walk.keys, [b.block_id for b in response.blocks], walk.sites, writer)
        data = response.SerializeToString(deterministic=True)
        keeper = writer.keeper
        if keeper is not None:
            plan = self.plans.learn(run.workspace_id, blocks, walk.keys)
            if plan is not None:
                frame = cut_frame(data, walk.sites, writer.texts, keeper.keys)
                if frame is not None:
                    keeper.attach(plan.frame_name, frame, frame.size)
        return data

    async def IssueRunGrant(
        self, request: pb.IssueRunGrantRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IssueRunGrantResponse:
        token, grant = await self._grants.issue(
            caller(),
            request.workspace_id,
            request.workflow_id,
            request.execution_id,
            convert.trigger(request.trigger),
            request.triggering_user_id,
            request.workflow_owner_id,
            request.ttl_seconds,
            list(request.keys),
        )
        response = pb.IssueRunGrantResponse(grant=token, grant_id=grant.id, run_user_id=grant.run_user_id)
        response.expires_at.FromSeconds(int(grant.expires_at))
        return response

    async def RevokeRunGrant(
        self, request: pb.RevokeRunGrantRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RevokeRunGrantResponse:
        revoked = await self._grants.revoke(caller(), request.workspace_id, request.grant, request.grant_id)
        return pb.RevokeRunGrantResponse(revoked=revoked)

    async def EndRun(self, request: pb.EndRunRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.EndRunResponse:
        ended = await self._grants.end_run(caller(), request.workspace_id, request.execution_id)
        return pb.EndRunResponse(grants_ended=ended)


def _parse_blocks(request: Any, blocks: Sequence[bytes]) -> list[common.BlockInputs]:
    """The request's blocks as messages; InvalidArgument as the registry words it for a request
    that does not decode (the error protobuf gives for the whole request)."""
    try:
        return [common.BlockInputs.FromString(block) for block in blocks]
    except DecodeError:
        pass
    try:
        pb.ResolveInputsRequest.FromString(request.SerializeToString())
    except DecodeError as exc:
        raise InvalidArgument(f"the request could not be decoded: {exc}") from None
    raise InvalidArgument("the request could not be decoded: a block is malformed")


def _too_large(size: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"the resolved inputs would take about {size:,} bytes, over the {MAX_MESSAGE_BYTES:,} bytes that "
        "one response may hold; resolve fewer blocks per call"
    )


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _check_response_size(
    response: pb.ResolveInputsResponse,
    walk: Walk,
    errors: Sequence[BlockFailure | None],
    texts: Mapping[str, str],
) -> bool:
    """Raises ResourceExhausted when the response would exceed MAX_MESSAGE_BYTES, from what is
    known before rendering: the inputs as copied, each value's size times its uses, each
    reference's path and key, each block error.

    The bound is an upper one: it counts each `{{KEY}}` as staying beside its value, and every
    length prefix around a rewritten string as growing. Past the limit but within
    MEASURED_BAND_BYTES of it, the response is rendered (so at most that much is ever built) and
    True returned: it must be measured. Beyond that band the real size is past the limit too, as
    the bound exceeds it by less than the band: by the references' `{{KEY}}`s and escapes (all of
    them part of the request, itself within MAX_MESSAGE_BYTES) and a few hundred bytes per
    reference."""
    if not walk.references:
        return False  # the inputs as they came, within the limit of the request
    upper = response.ByteSize()
    if any(errors):
        for result, error in zip(response.blocks, errors, strict=True):
            if error is not None:
                # Inputs out, error in, each with its tag and length prefix; the block's own
                # prefix may grow.
                upper += _error(error).ByteSize() - result.inputs.ByteSize() + 7
    # First a bound that needs no path and no value's size: what every call pays. A value's
    # UTF-8 takes 4 bytes a code point at most; a path, its names twice over and 12 bytes a level.
    rough = walk.references * (
        4 * max(map(len, texts.values()), default=0)
        + 2 * upper
        + PATH_BYTES_PER_LEVEL * MAX_INPUT_DEPTH
        + 256
        + REFERENCE_OVERHEAD_BYTES
    ) + walk.strings * (PREFIX_GROWTH_BYTES_PER_STRING + PREFIX_GROWTH_BYTES_PER_LEVEL * MAX_INPUT_DEPTH)
    if upper + rough <= MAX_MESSAGE_BYTES:
        return False
    # Then closely: each value's UTF-8 size, each path sized without building it.
    path_size = PathSizes()
    sizes = {key: _utf8_size(text) for key, text in texts.items()}
    for sites, error in zip(walk.sites, errors, strict=True):
        if error is not None:
            continue
        for site in sites:
            if site.template.references:
                upper += PREFIX_GROWTH_BYTES_PER_STRING + PREFIX_GROWTH_BYTES_PER_LEVEL * site.depth
                path = path_size(site.step) + REFERENCE_OVERHEAD_BYTES
                for ref in site.template.references:
                    upper += sizes[ref.key] + len(ref.key) + path
    if upper > MAX_MESSAGE_BYTES + MEASURED_BAND_BYTES:
        raise _too_large(upper)
    return upper > MAX_MESSAGE_BYTES


class _ResponseWriter:
    """The run's result written into the protobuf response (the port app/runs.py writes to)."""

    __slots__ = ("keeper", "measure_after", "response", "texts", "walk")

    def __init__(self, response: pb.ResolveInputsResponse, walk: Walk) -> None:
        self.response = response
        self.walk = walk
        self.measure_after = False
        # For the frame of this response (service/api/fastpath.py), while the call lasts.
        self.texts: Mapping[str, str] = {}
        self.keeper: FrameKeeper | None = None

    def check_size(self, failures: Sequence[BlockFailure | None], texts: Mapping[str, str]) -> None:
        self.texts = texts
        self.measure_after = _check_response_size(self.response, self.walk, failures, texts)

    def keep(self, keeper: FrameKeeper) -> None:
        self.keeper = keeper

    def fail_block(self, index: int, failure: BlockFailure) -> None:
        result = self.response.blocks[index]
        result.ClearField("inputs")
        result.error.CopyFrom(_error(failure))

    def set_string(self, site: Site, text: str) -> None:
        site.holder.string_value = text

    def add_references(self, index: int, references: list[Reference]) -> None:
        # One parse of prebuilt bytes instead of a Python call per field of each reference.
        remembered = _references.get
        self.response.blocks[index].MergeFromString(
            b"".join([remembered(entry) or _reference_bytes(entry) for entry in references])
        )

    def finish(self) -> None:
        if self.measure_after and (size := self.response.ByteSize()) > MAX_MESSAGE_BYTES:
            raise _too_large(size)


def _error(failure: BlockFailure) -> common.BlockError:
    return common.BlockError(
        code=int(failure.code),  # type: ignore[arg-type]
        key=failure.key,
        field_path=failure.field_path,
        message=failure.message,
    )


def _reference_bytes(entry: tuple[str, str, int, int, int, int]) -> bytes:
    """A `BlockResult.references` entry (path, key, scope, version, start, end), serialized:
    names, version and offsets, never a value. Remembered when short (MEMO_REFERENCE_CHARS)."""
    path, key, scope, version, start, end = entry
    reference = pb.ResolvedReference(
        field_path=path,
        key=key,
        scope=scope,  # type: ignore[arg-type]
        version=version,
        start=start,
        end=end,
    )
    found = pb.BlockResult(references=[reference]).SerializeToString()
    if len(path) + len(key) <= MEMO_REFERENCE_CHARS:
        _references.put(entry, found)
    return found

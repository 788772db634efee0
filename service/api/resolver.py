"""secrets.v1.Resolver: what executors call just before a block runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import grpc

from service.api import convert
from service.api.common import caller
from service.api.inputs import BoundedMemo, Site, sites_in_blocks
from service.app.resolver import KeyOutcome, ResolverService
from service.domain.keys import require_id
from service.domain.resolution import block_error_message, run_user_for
from service.errors import rpc
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as pb
from service.gen.secrets.v1 import resolver_pb2_grpc as pb_grpc

# Serialized `BlockResult.references` entries, remembered: the same inputs resolve to the same
# paths, versions and offsets run after run. Only entries whose path and key hold at most
# MEMO_REFERENCE_CHARS characters together are kept: an entry (key tuple, strings, bytes) takes
# about 1.3 KiB at most, in 4-byte characters: the memo stays under 3.5 MiB (tests/findings/test_f02_*.py
# measures it).
MEMO_REFERENCE_CHARS: Final = 96
_references: BoundedMemo[tuple[str, str, int, int, int, int], bytes] = BoundedMemo(2048)


class ResolverServicer(pb_grpc.ResolverServicer):
    def __init__(self, resolver: ResolverService) -> None:
        self._resolver = resolver

    @rpc
    async def ResolveInputs(
        self, request: pb.ResolveInputsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ResolveInputsResponse:
        require_id("workspace_id", request.workspace_id)
        run_user = run_user_for(convert.trigger(request.trigger), request.triggering_user_id, request.workflow_owner_id)
        require_id("run user id", run_user)
        response = pb.ResolveInputsResponse(run_user_id=run_user)
        for block in request.blocks:
            # The response starts as a copy of the inputs; only strings with references change.
            response.blocks.add(block_id=block.block_id).inputs.CopyFrom(block.inputs)
        sites_per_block, keys = sites_in_blocks([(b.block_id, b.inputs) for b in response.blocks])
        outcomes = await self._resolver.resolve_keys(request.workspace_id, run_user, keys) if keys else {}
        # Each value revealed once per call, however many places use it.
        texts = {key: o.value.reveal() for key, o in outcomes.items() if o.value is not None}
        # A block fails at its first reference that does not resolve; when every key resolved,
        # none does.
        errors: list[common.BlockError | None] = (
            [
                _block_error(result, sites, outcomes)
                for result, sites in zip(response.blocks, sites_per_block, strict=True)
            ]
            if len(texts) < len(outcomes)
            else [None] * len(sites_per_block)
        )
        failed = 0
        for result, sites, error in zip(response.blocks, sites_per_block, errors, strict=True):
            if error is None:
                _fill_block(result, sites, outcomes, texts)
            else:
                failed += 1
                result.ClearField("inputs")
                result.error.CopyFrom(error)
        if keys:
            used = [o.decision for o in outcomes.values() if o.value is not None]
            self._resolver.record(caller(), request.workspace_id, run_user, request.execution_id, used, failed)
        return response


def _block_error(
    result: pb.BlockResult, sites: list[Site], outcomes: Mapping[str, KeyOutcome]
) -> common.BlockError | None:
    """The block's first reference that does not resolve, as its error; None when all do."""
    for site in sites:
        for ref in site.template.references:
            decision = outcomes[ref.key].decision
            if decision.error is not None:
                return common.BlockError(
                    code=int(decision.error),  # type: ignore[arg-type]
                    key=ref.key,
                    field_path=site.path,
                    message=block_error_message(result.block_id, site.path, decision),
                )
    return None


def _fill_block(
    result: pb.BlockResult, sites: list[Site], outcomes: Mapping[str, KeyOutcome], texts: Mapping[str, str]
) -> None:
    """Renders one block's strings, each reference's value where its `{{KEY}}` was, and lists
    the references with the offsets of their values in code points (resolver.proto)."""
    fragments = []
    remembered = _references.get
    for site in sites:
        template = site.template
        parts = template.parts
        if not template.references:
            site.holder.string_value = parts[0]  # escapes only (`\{{` -> `{{`)
            continue
        path = site.path
        out = [parts[0]]
        start = len(parts[0])
        for ref, part in zip(template.references, parts[1:], strict=True):
            text = texts[ref.key]
            chosen = outcomes[ref.key].decision.chosen
            assert chosen is not None
            end = start + len(text)
            entry = (path, ref.key, int(chosen.scope), chosen.version, start, end)
            fragments.append(remembered(entry) or _reference_bytes(entry))
            out.append(text)
            out.append(part)
            start = end + len(part)
        site.holder.string_value = "".join(out)
    # One parse of prebuilt bytes instead of a Python call per field of each reference.
    result.MergeFromString(b"".join(fragments))


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

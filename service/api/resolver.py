"""secrets.v1.Resolver: what executors call just before a block runs."""

from __future__ import annotations

import functools
from typing import Any

import grpc

from service.api import convert
from service.api.common import caller
from service.api.inputs import Site, sites_in_blocks
from service.app.resolver import KeyOutcome, ResolverService
from service.domain.keys import require_id
from service.domain.resolution import block_error_message, run_user_for
from service.errors import rpc
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import resolver_pb2 as pb
from service.gen.secrets.v1 import resolver_pb2_grpc as pb_grpc


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
        failed = 0
        for result, sites in zip(response.blocks, sites_per_block, strict=True):
            if not _fill_block(result, sites, outcomes, texts):
                failed += 1
        if keys:
            used = [o.decision for o in outcomes.values() if o.value is not None]
            self._resolver.record(caller(), request.workspace_id, run_user, request.execution_id, used, failed)
        return response


def _fill_block(
    result: pb.BlockResult, sites: list[Site], outcomes: dict[str, KeyOutcome], texts: dict[str, str]
) -> bool:
    """Renders one block's references, or sets its error; True when the block resolved."""
    for site in sites:
        for ref in site.template.references:
            decision = outcomes[ref.key].decision
            if decision.error is not None:
                result.ClearField("inputs")
                result.error.CopyFrom(
                    common.BlockError(
                        code=int(decision.error),  # type: ignore[arg-type]
                        key=ref.key,
                        field_path=site.path,
                        message=block_error_message(result.block_id, site.path, decision),
                    )
                )
                return False
    fragments = []
    for site in sites:
        site.holder.string_value = site.template.render(texts.__getitem__)
        for ref in site.template.references:
            chosen = outcomes[ref.key].decision.chosen
            assert chosen is not None
            fragments.append(_reference_bytes(site.path, ref.key, int(chosen.scope), chosen.version))
    # One parse of prebuilt bytes instead of a Python call per reference message.
    result.MergeFromString(b"".join(fragments))
    return True


@functools.lru_cache(maxsize=65_536)
def _reference_bytes(field_path: str, key: str, scope: int, version: int) -> bytes:
    """`BlockResult.references` entry, serialized (names and versions only, never a value)."""
    return pb.BlockResult(
        references=[pb.ResolvedReference(field_path=field_path, key=key, scope=scope, version=version)]  # type: ignore[arg-type]
    ).SerializeToString()

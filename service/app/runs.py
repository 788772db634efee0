"""Resolving a run's blocks (Resolver.ResolveInputs): the executor's use case, whole.

`RunResolver.start` decides the run: from its run grant (verified, and the request may only
repeat what it says), or from the request's trigger and users (the run user rule of
domain/resolution.py). `RunResolver.resolve` then checks the grant's keys, resolves and opens
each key once (service/app/resolver.py), applies the block-failure rule (a block fails at its
first reference that does not resolve), renders every string with the values in place and the
offsets of each value, and buffers the audit event, which also feeds usage. Nothing above this
module decides anything about a run.

The walk of the inputs stays in the api layer (service/api/inputs.py): it works on the
protobuf Struct in place, and the response is a copy of the request in which only the strings
that hold references are rewritten. Converting the inputs into other objects and back is what
would make a resolve slow, so this module receives the walk's sites (anything with a `template`
and a `path`) and writes its result through the `ResolvedInputs` port, which the servicer
implements on the protobuf response. The rules the walk applies (templates, limits, the id rule)
all come from service/domain.

`RunResolver.resolve_framed` is the fast path of the same use case (issue 15): for blocks whose
every key resolved from one resolve-cache entry before, and whose response the servicer kept
with that entry as a frame (ResolvedInputs.keep), it checks the grant's keys and the run's pins
as `resolve` does, opens the values, has the servicer join them into the frame (FramedInputs)
and buffers the same audit event; whenever anything differs it answers None, having recorded
nothing, and the servicer takes `resolve`. The decisions stay here on both paths.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, TypeVar

from service.app.context import Caller
from service.app.grants import Grant, GrantService
from service.app.resolver import FrameKeeper, KeyOutcome, ResolverService
from service.domain.errors import DataLoss, PermissionDenied
from service.domain.keys import require_id
from service.domain.model import BlockErrorCode, Trigger
from service.domain.policy import principal_may_use_workspace
from service.domain.resolution import block_error_message, run_user_for
from service.domain.templates import Template


class TemplateSite(Protocol):
    """One string of the inputs that holds references or escapes, as the walk found it."""

    @property
    def template(self) -> Template: ...

    @property
    def path(self) -> str: ...


SiteT = TypeVar("SiteT", bound=TemplateSite)
SiteT_contra = TypeVar("SiteT_contra", bound=TemplateSite, contravariant=True)


@dataclass(frozen=True, slots=True)
class BlockFailure:
    """Why a block cannot run: its first reference that does not resolve."""

    code: BlockErrorCode
    key: str
    field_path: str
    message: str


# One reference's place in its rendered string: (field path, key, scope, version, start, end),
# offsets in code points (resolver.proto). Names and numbers, never a value.
Reference = tuple[str, str, int, int, int, int]


class ResolvedInputs(Protocol[SiteT_contra]):
    """Where `RunResolver.resolve` writes a run's result; the servicer implements it on the
    protobuf response, which starts as a copy of the request's blocks."""

    def check_size(self, failures: Sequence[BlockFailure | None], texts: Mapping[str, str]) -> None:
        """Raises ResourceExhausted when the response could not be sent; called before any
        value is written."""

    def fail_block(self, index: int, failure: BlockFailure) -> None: ...

    def set_string(self, site: SiteT_contra, text: str) -> None: ...

    def add_references(self, index: int, references: list[Reference]) -> None: ...

    def finish(self) -> None:
        """Raises ResourceExhausted when the response, now built, is too large to send."""

    def keep(self, keeper: FrameKeeper) -> None:
        """Called after `finish` when every block resolved, every key as one resolve-cache
        entry decided: what the servicer derives from this response may be kept with that entry
        (the response frames of the fast path, `RunResolver.resolve_framed`)."""


class FramedInputs(Protocol):
    """The fast path's port: the servicer's response, made from a frame it attached to the
    resolve-cache entry (FrameKeeper) and the values of the entry's keys."""

    @property
    def frame_name(self) -> Hashable:
        """The name the frame was attached under."""

    def render(self, frame: object, values: Sequence[bytes]) -> bytes | None:
        """The response, with `values` (each value's UTF-8 bytes) where the frame has their
        places; None when the frame does not fit them (the call then takes the ordinary path)."""


# RunRequest and Run are named tuples rather than frozen dataclasses: every resolve makes one of
# each, and a frozen dataclass sets each field through object.__setattr__ (several times the cost).
# A run without a grant is decided from its request alone (the id rule, the run user rule), the
# same way every time: executors send the same run's request for each of its blocks, so the
# decision is remembered, for requests whose ids hold at most MEMO_RUN_CHARS characters in all.
# An entry (the request, the run, their strings at 4 bytes a character at most) takes under
# 2.5 KiB: the memo stays under 2.5 MiB, and starts over when full.
MEMO_RUNS: Final = 1024
MEMO_RUN_CHARS: Final = 320


class RunRequest(NamedTuple):
    """What the executor says about the run (every id unchecked until `start`)."""

    workspace_id: str
    workflow_id: str
    execution_id: str
    trigger: int  # secrets.v1.Trigger's number; 0 when unspecified
    triggering_user_id: str
    workflow_owner_id: str
    grant: str
    latest_values: bool


class Run(NamedTuple):
    """A run as decided: whose secrets it may use, and what its audit event names."""

    workspace_id: str
    workflow_id: str
    execution_id: str
    run_user_id: str
    trigger: int
    latest_values: bool
    grant: Grant | None


def _trigger(number: int) -> Trigger | None:
    try:
        return Trigger(number)
    except ValueError:
        return None


class RunResolver:
    def __init__(self, resolver: ResolverService, grants: GrantService) -> None:
        self._resolver = resolver
        self._grants = grants
        # Runs without a grant, as decided from requests seen before (see MEMO_RUNS).
        self._runs: dict[RunRequest, Run] = {}

    async def start(self, caller: Caller, request: RunRequest) -> Run:
        """The run the request is for: the run grant's (a principal that requires one must send
        one), else the one the request describes."""
        if request.grant or caller.requires_grant:
            grant = await self._run_grant(caller, request)
            return Run(
                grant.workspace_id,
                grant.workflow_id,
                grant.execution_id,
                grant.run_user_id,
                int(grant.trigger),
                request.latest_values,
                grant,
            )
        run = self._runs.get(request)
        if run is not None:
            return run
        require_id("workspace_id", request.workspace_id)
        # Optional, but they go into the audit log: held to the one id rule like every id.
        require_id("workflow_id", request.workflow_id, required=False)
        require_id("execution_id", request.execution_id, required=False)
        run_user = run_user_for(_trigger(request.trigger), request.triggering_user_id, request.workflow_owner_id)
        run = Run(
            request.workspace_id,
            request.workflow_id,
            request.execution_id,
            run_user,
            request.trigger,
            request.latest_values,
            None,
        )
        ids = (request.workspace_id, request.workflow_id, request.execution_id, request.triggering_user_id)
        if sum(map(len, ids)) + len(request.workflow_owner_id) <= MEMO_RUN_CHARS:
            if len(self._runs) >= MEMO_RUNS:
                self._runs.clear()
            self._runs[request] = run
        return run

    async def _run_grant(self, caller: Caller, request: RunRequest) -> Grant:
        """The request's run grant, checked; PermissionDenied when there is none (for an executor
        that requires one), it cannot be used, or the request names another run than its own."""
        if not request.grant:
            raise PermissionDenied(
                f"principal {caller.principal!r} may resolve only with a run grant (ResolveInputsRequest.grant)"
            )
        grant = await self._grants.check(request.grant)
        if not principal_may_use_workspace(caller.workspaces, grant.workspace_id):
            raise PermissionDenied(f"principal {caller.principal!r} is not scoped to workspace {grant.workspace_id!r}")
        for field, asked, granted in (
            ("workspace_id", request.workspace_id, grant.workspace_id),
            ("workflow_id", request.workflow_id, grant.workflow_id),
            ("execution_id", request.execution_id, grant.execution_id),
            ("triggering_user_id", request.triggering_user_id, grant.triggering_user_id),
            ("workflow_owner_id", request.workflow_owner_id, grant.workflow_owner_id),
        ):
            if asked and asked != granted:
                raise PermissionDenied(f"{field} differs from the run grant's; leave it empty or send the grant's")
        if request.trigger and request.trigger != int(grant.trigger):
            raise PermissionDenied("trigger differs from the run grant's; leave it unspecified or send the grant's")
        return grant

    async def resolve(
        self,
        caller: Caller,
        run: Run,
        keys: Sequence[str],
        block_ids: Sequence[str],
        sites: Sequence[Sequence[SiteT]],
        out: ResolvedInputs[SiteT],
    ) -> None:
        """Resolves every block of the run into `out` and buffers the audit event."""
        grant = run.grant
        _check_grant_keys(grant, keys)
        outcomes: dict[str, KeyOutcome] = {}
        keeper: FrameKeeper | None = None
        if keys:
            try:
                outcomes, keeper = await self._resolver.resolve_keys_kept(
                    run.workspace_id, run.run_user_id, keys, run.execution_id, run.latest_values
                )
            except DataLoss as exc:
                self._record_data_loss(caller, run, exc)
                raise
        # Each value revealed once per call, however many places use it.
        texts = {key: o.value.reveal() for key, o in outcomes.items() if o.value is not None}
        # A block fails at its first reference that does not resolve; when every key resolved,
        # none does.
        failures: list[BlockFailure | None] = (
            [
                _first_failure(block_id, block_sites, outcomes)
                for block_id, block_sites in zip(block_ids, sites, strict=True)
            ]
            if len(texts) < len(outcomes)
            else [None] * len(sites)
        )
        # The response's size is known before a single value is copied into it (F16).
        out.check_size(failures, texts)
        failed = 0
        for index, (block_sites, failure) in enumerate(zip(sites, failures, strict=True)):
            if failure is None:
                out.add_references(index, _render(block_sites, outcomes, texts, out))
            else:
                failed += 1
                out.fail_block(index, failure)
        out.finish()
        if keys:
            used = [o for o in outcomes.values() if o.value is not None]
            self._resolver.record(
                caller,
                run.workspace_id,
                run.run_user_id,
                run.execution_id,
                used,
                failed,
                grant.id if grant is not None else "",
                run.workflow_id,
                trigger=run.trigger,
                failed_keys=[(k, int(o.decision.error)) for k, o in outcomes.items() if o.decision.error is not None],
            )
        if keeper is not None and not failed:
            out.keep(keeper)

    async def resolve_framed(self, caller: Caller, run: Run, keys: Sequence[str], out: FramedInputs) -> bytes | None:
        """The fast path of `resolve`, for blocks whose every key resolved from the same
        resolve-cache entry before and whose response the servicer kept with it as a frame
        (ResolvedInputs.keep): the same checks (the grant's keys), the values opened, the
        response made by `out` from its frame, the same audit event. None, with nothing
        recorded, whenever anything differs (no entry, no frame, a pin that chose another
        version, a frame that does not fit): the caller then takes `resolve`."""
        _check_grant_keys(run.grant, keys)
        try:
            framed = await self._resolver.open_framed(
                run.workspace_id, run.run_user_id, keys, run.execution_id, run.latest_values, out.frame_name
            )
        except DataLoss as exc:
            self._record_data_loss(caller, run, exc)
            raise
        if framed is None:
            return None
        response = out.render(framed.frame, framed.values)
        if response is None:
            return None
        self._resolver.record_framed(
            caller,
            run.workspace_id,
            run.run_user_id,
            run.execution_id,
            framed.audit,
            run.grant.id if run.grant is not None else "",
            run.workflow_id,
            trigger=run.trigger,
        )
        return response

    def _record_data_loss(self, caller: Caller, run: Run, exc: DataLoss) -> None:
        # Audited too: a value that fails authentication is what an investigator looks for.
        self._resolver.record_data_loss(
            caller,
            run.workspace_id,
            run.run_user_id,
            run.execution_id,
            exc,
            workflow_id=run.workflow_id,
            trigger=run.trigger,
        )


def _check_grant_keys(grant: Grant | None, keys: Sequence[str]) -> None:
    """PermissionDenied when the run's grant names its keys and `keys` go beyond them."""
    if grant is not None and grant.keys is not None and not grant.keys.issuperset(keys):
        outside = sorted(set(keys) - grant.keys)
        shown = ", ".join(outside[:5]) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
        raise PermissionDenied(f"the run grant {grant.id} does not allow key(s) {shown}")


def _first_failure(
    block_id: str, sites: Sequence[TemplateSite], outcomes: Mapping[str, KeyOutcome]
) -> BlockFailure | None:
    """The block's first reference that does not resolve, as its failure; None when all do."""
    for site in sites:
        for ref in site.template.references:
            decision = outcomes[ref.key].decision
            if decision.error is not None:
                path = site.path
                return BlockFailure(decision.error, ref.key, path, block_error_message(block_id, path, decision))
    return None


def _render(
    sites: Sequence[SiteT],
    outcomes: Mapping[str, KeyOutcome],
    texts: Mapping[str, str],
    out: ResolvedInputs[SiteT],
) -> list[Reference]:
    """Renders one block's strings, each reference's value where its `{{KEY}}` was, and returns
    its references with the offsets of their values in code points (resolver.proto)."""
    references: list[Reference] = []
    for site in sites:
        template = site.template
        parts = template.parts
        if not template.references:
            out.set_string(site, parts[0])  # escapes only (`\{{` -> `{{`)
            continue
        path = site.path
        rendered = [parts[0]]
        start = len(parts[0])
        for ref, part in zip(template.references, parts[1:], strict=True):
            text = texts[ref.key]
            chosen = outcomes[ref.key].decision.chosen
            assert chosen is not None
            end = start + len(text)
            references.append((path, ref.key, int(chosen.scope), chosen.version, start, end))
            rendered.append(text)
            rendered.append(part)
            start = end + len(part)
        out.set_string(site, "".join(rendered))
    return references

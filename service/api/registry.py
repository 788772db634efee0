"""Registers servicers: every method of a service, and only through here, gets the same handling.

Deny by default, as the auth interceptor is: each method of the service's descriptor is wrapped
by `_handled` (the caller's deadline carried down, the workspace scope of the principal checked,
every exception turned into its status by service/api/errors.py), and a method the servicer
does not implement answers UNIMPLEMENTED. No servicer method has to remember a decorator.

The generated `add_XServicer_to_server` functions deserialize with `Message.FromString`; when that
raises (a string field that is not UTF-8, nesting beyond protobuf's depth limit, truncated
bytes) gRPC answers INTERNAL, as if the server were broken. Here the failure is carried to the
handler as an `Undecodable` request, which is answered INVALID_ARGUMENT.

Requests are also held to a budget of bytes in flight (`RequestBudget`): gRPC has read a request
before any handler runs, and parsing it costs a few times its size again, so 150 concurrent 4 MiB
saves from a caller with no rights at all once took the server past 1.5 GB. Past the budget a
request is not parsed; the call is answered RESOURCE_EXHAUSTED at once.

A servicer may name methods in `WIRE_METHODS` (method name -> request class): those are decoded
into that class instead (ResolveInputs: service/api/mirror.py, its blocks left as bytes) and
answer bytes the servicer serialized itself, with the same handling and budget as every method.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import DecodeError, Message

from service.api.errors import status_for
from service.auth import current_caller
from service.calls import call_deadline
from service.domain import errors as e
from service.domain.limits import MAX_ID_LENGTH
from service.domain.policy import principal_may_use_workspace

log = logging.getLogger("service.api")
Ctx = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Ctx], Awaitable[Any]]


class RequestBudget:
    """Bytes of requests decoded and not yet done with, across all calls of the process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.refused = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit and self.held > 0:
            # A request larger than the whole budget is still served when nothing else is held:
            # the message size limit bounds it, and refusing it forever would help nobody.
            self.refused += 1
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class Held:
    """A decoded request and its share of the budget, given back when this object is freed
    (reference counting frees it as soon as the call is done with it, whether the handler ran,
    failed or was never reached because the call was cancelled)."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Any, size: int, budget: RequestBudget) -> None:
        self.message = message
        weakref.finalize(self, budget.give, size)


class Overloaded:
    """A request that was not decoded: the budget of request bytes in flight was spent."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class Undecodable:
    """A request that could not be parsed; `reason` is protobuf's, which never quotes the data."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _decoder(message_class: type[Message], budget: RequestBudget | None) -> Callable[[bytes], Any]:
    parse = message_class.FromString

    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    if budget is None:
        return decode

    # Small requests (resolves, listings) skip the bookkeeping: the budget is for the bytes that
    # can add up, and a finalizer per call costs more than a resolve can spare.
    small = 64 * 1024

    def decode_within_budget(data: bytes) -> Any:
        size = len(data)
        if size <= small:
            return decode(data)
        if not budget.take(size):
            return Overloaded(size)
        try:
            message = decode(data)
        except BaseException:
            budget.give(size)
            raise
        return Held(message, size, budget)

    return decode_within_budget


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _require_workspace_scope(request: object) -> None:
    """A principal scoped to some workspaces is refused on any other, for every role and every
    RPC: here, where every call passes once its request is decoded, rather than in each use case
    that might forget. Calls that name no workspace (key status, rotation, the audit log of all
    workspaces) are for unscoped principals only."""
    who = current_caller.get(None)
    if who is None or who.workspaces is None:
        return
    workspace_id = getattr(request, "workspace_id", "")
    if not workspace_id and _names_workspace_by_grant(request):
        # The workspace is the grant's: the resolve use case checks it against the scope once the
        # grant is verified (and refuses a request without a valid one).
        return
    if not principal_may_use_workspace(who.workspaces, workspace_id):
        # Quoted up to the longest valid id: this check comes before the id rule, and the whole of
        # a hostile id made a status message past gRPC's metadata limit (RESOURCE_EXHAUSTED).
        shown = workspace_id if len(workspace_id) <= MAX_ID_LENGTH else workspace_id[:MAX_ID_LENGTH] + "..."
        where = f"workspace {shown!r}" if workspace_id else "calls that name no workspace"
        raise e.PermissionDenied(f"principal {who.principal!r} is not scoped to {where}")


def _names_workspace_by_grant(request: object) -> bool:
    """A resolve with a run grant may leave workspace_id empty: the grant names the workspace."""
    descriptor_ = getattr(request, "DESCRIPTOR", None)
    full_name = getattr(descriptor_, "full_name", "")
    return full_name == "secrets.v1.ResolveInputsRequest" and bool(getattr(request, "grant", ""))


def _handled(method: Handler, name: str) -> Handler:
    """`method` with the handling every call gets (see the module's docstring)."""

    async def handle(request: Any, context: Ctx) -> Any:
        remaining = context.time_remaining()
        token = call_deadline.set(time.monotonic() + remaining if remaining is not None else None)
        began = time.perf_counter()
        outcome = "OK"
        try:
            held = request
            if isinstance(request, Held):
                # `held` stays referenced until this call is done: its budget is given back then.
                request = request.message
            if isinstance(request, Overloaded):
                raise e.ResourceExhausted(
                    f"the server is holding as many request bytes as it may; retry shortly ({request.size} bytes refused)"
                )
            if isinstance(request, Undecodable):
                raise e.InvalidArgument(f"the request could not be decoded: {request.reason}")
            _require_workspace_scope(request)
            response = await method(request, context)
            del held
            return response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message, trailing = status_for(exc)
            outcome = code.name
            if trailing:
                await context.abort(code, message, trailing_metadata=trailing)
            await context.abort(code, message)
            raise  # unreachable: abort raises
        finally:
            call_deadline.reset(token)
            if log.isEnabledFor(logging.DEBUG):
                who = current_caller.get(None)
                log.debug(
                    "%s by %s for %r: %s in %.2f ms",
                    name,
                    who.principal if who else "?",
                    who.user_id if who else "",
                    outcome,
                    (time.perf_counter() - began) * 1000,
                )

    return handle


def _unimplemented(name: str) -> Handler:
    async def refuse(request: Any, context: Ctx) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by this server")

    return refuse


def _implementation(servicer: object, name: str) -> Handler | None:
    """The servicer's own method `name`, or None when only the generated base class (which
    answers UNIMPLEMENTED) has one."""
    for cls in type(servicer).__mro__:
        if name in cls.__dict__:
            generated = cls.__module__.endswith("_pb2_grpc")
            return None if generated else getattr(servicer, name)
    return None


def add_servicer(
    server: grpc.aio.Server,
    servicer: object,
    service: descriptor.ServiceDescriptor,
    budget: RequestBudget | None = None,
) -> None:
    handlers = {}
    # Methods the servicer answers with bytes it serialized itself, from a request class of its
    # own (ResolveInputs: service/api/mirror.py); the same handling otherwise.
    wire: Mapping[str, type[Message]] = getattr(servicer, "WIRE_METHODS", {})
    for method in service.methods:
        implementation = _implementation(servicer, method.name)
        request_class = wire.get(method.name) or message_factory.GetMessageClass(method.input_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _handled(implementation, method.name) if implementation is not None else _unimplemented(method.name),
            request_deserializer=_decoder(request_class, budget),
            response_serializer=None if method.name in wire else _serialize,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))

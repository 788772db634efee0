"""Registers servicers with request decoding that turns undecodable input into INVALID_ARGUMENT.

The generated `add_XServicer_to_server` functions deserialize with `Message.FromString`; when that
raises (a string field that is not UTF-8, nesting beyond protobuf's depth limit, truncated
bytes) gRPC answers INTERNAL, as if the server were broken. Here the failure is carried to the
servicer as an `Undecodable` request, which `service.errors.rpc` reports as INVALID_ARGUMENT.

Requests are also held to a budget of bytes in flight (`RequestBudget`): gRPC has read a request
before any handler runs, and parsing it costs a few times its size again, so 150 concurrent 4 MiB
saves from a caller with no rights at all once took the server past 1.5 GB. Past the budget a
request is not parsed; the call is answered RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import DecodeError, Message


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


def add_servicer(
    server: grpc.aio.Server,
    servicer: object,
    service: descriptor.ServiceDescriptor,
    budget: RequestBudget | None = None,
) -> None:
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_decoder(message_factory.GetMessageClass(method.input_type), budget),
            response_serializer=_serialize,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))

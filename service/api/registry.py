"""Registers servicers with request decoding that turns undecodable input into INVALID_ARGUMENT.

The generated `add_XServicer_to_server` functions deserialize with `Message.FromString`; when that
raises (a string field that is not UTF-8, nesting beyond protobuf's depth limit, truncated
bytes) gRPC answers INTERNAL, as if the server were broken. Here the failure is carried to the
servicer as an `Undecodable` request, which `service.errors.rpc` reports as INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import DecodeError, Message


class Undecodable:
    """A request that could not be parsed; `reason` is protobuf's, which never quotes the data."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _decoder(message_class: type[Message]) -> Callable[[bytes], Any]:
    parse = message_class.FromString

    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Undecodable(str(exc))

    return decode


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def add_servicer(server: grpc.aio.Server, servicer: object, service: descriptor.ServiceDescriptor) -> None:
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_decoder(message_factory.GetMessageClass(method.input_type)),
            response_serializer=_serialize,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))

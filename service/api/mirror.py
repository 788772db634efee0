"""A mirror of `secrets.v1.ResolveInputsRequest` that keeps its blocks as bytes.

ResolveInputs is registered with this message as its request (service/api/registry.py, the
servicer's WIRE_METHODS): gRPC's deserializer parses the request's ids, trigger, grant and flags
as ever (the protobuf runtime checks their UTF-8 and types), but leaves each `blocks` element as
the exact bytes the caller sent, so that the resolver can look those bytes up among the requests
it has served before (service/api/fastpath.py) before it parses them, if it must at all.

The mirror is built at start-up from the generated descriptor, in a descriptor pool of its own:
same full name, same field numbers, names and types, except that field 7 (`blocks`) is `bytes`
and field 4 (`trigger`) an `int32` (the wire is the same: an open enum is a varint read as
int32). Every occurrence of field 7 is one element either way, so the mirror's elements are,
one for one, the requests' blocks. Its full name being the request's, the registry, the access
log and protobuf's own error messages name it as they name the request.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from service.gen.secrets.v1 import resolver_pb2 as pb

BLOCKS_FIELD: Final = 7
TRIGGER_FIELD: Final = 4


def _mirror_file() -> descriptor_pb2.FileDescriptorProto:
    real = pb.ResolveInputsRequest.DESCRIPTOR
    file = descriptor_pb2.FileDescriptorProto(
        name="secrets/v1/resolver_mirror.proto", package=real.file.package, syntax="proto3"
    )
    message = file.message_type.add()
    real.CopyToProto(message)
    for field in message.field:
        if field.number == BLOCKS_FIELD:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            field.ClearField("type_name")
        elif field.number == TRIGGER_FIELD:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_INT32
            field.ClearField("type_name")
        elif field.type in (
            descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
            descriptor_pb2.FieldDescriptorProto.TYPE_ENUM,
        ):
            raise RuntimeError(f"the mirror of {real.full_name} does not know field {field.name!r}")
    return file


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_mirror_file())
ResolveInputsRequest: Final[type[Message]] = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("secrets.v1.ResolveInputsRequest")
)


def parse(data: bytes) -> Any:
    """The request as a mirror message (DecodeError as protobuf raises it); typed Any, as its
    fields are the request's (workspace_id, ..., blocks as a list of bytes)."""
    return ResolveInputsRequest.FromString(data)

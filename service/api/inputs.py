"""Walking block inputs (google.protobuf.Struct) for `{{KEY}}` references.

The walk works on the protobuf messages in place: the resolved inputs are a copy of the
request's, with only the strings that hold references rewritten, so nothing else is converted.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import struct_pb2

from service.domain import templates
from service.domain.errors import FieldViolation, InvalidArgument, ResourceExhausted
from service.domain.limits import (
    MAX_BLOCKS_PER_REQUEST,
    MAX_INPUT_DEPTH,
    MAX_KEYS_PER_REQUEST,
    MAX_REFERENCES_PER_REQUEST,
)

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@dataclass(slots=True)
class Site:
    """One string in the inputs that holds references (or escapes)."""

    path: str
    holder: struct_pb2.Value
    template: templates.Template


@functools.lru_cache(maxsize=16_384)
def _join(parent: str, name: str) -> str:
    # Plain names read as `headers.Authorization`; others are quoted: `headers["X-Api.Key"]`.
    if _PLAIN_NAME.fullmatch(name):
        return f"{parent}.{name}" if parent else name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'{parent}["{escaped}"]'


def find_sites(inputs: struct_pb2.Struct, where: str) -> list[Site]:
    """Every string in `inputs` holding a reference or escape, in document order.

    Object keys are never substituted (SPEC 2.3). Raises InvalidArgument past MAX_INPUT_DEPTH.
    """
    found: list[Site] = []
    _walk_struct(inputs, "", 1, where, found)
    return found


def _too_deep(where: str) -> InvalidArgument:
    return InvalidArgument(
        f"{where} nest deeper than {MAX_INPUT_DEPTH} levels",
        [FieldViolation(where, f"nests deeper than {MAX_INPUT_DEPTH} levels")],
    )


# Appending to one list instead of chaining generators: this walk runs for every resolve.
def _walk_struct(struct: struct_pb2.Struct, path: str, depth: int, where: str, found: list[Site]) -> None:
    if depth > MAX_INPUT_DEPTH:
        raise _too_deep(where)
    fields = struct.fields
    # Sorted, because map order is not defined: the "first" failing reference of a block, and
    # the order of the references listed, must not change from one call to the next.
    for name in sorted(fields):
        _walk_value(fields[name], _join(path, name), depth, where, found)


def _walk_value(value: struct_pb2.Value, path: str, depth: int, where: str, found: list[Site]) -> None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        template = templates.parse(value.string_value)
        if template is not None:
            found.append(Site(path, value, template))
    elif kind == "struct_value":
        _walk_struct(value.struct_value, path, depth + 1, where, found)
    elif kind == "list_value":
        if depth + 1 > MAX_INPUT_DEPTH:
            raise _too_deep(where)
        for i, item in enumerate(value.list_value.values):
            _walk_value(item, f"{path}[{i}]", depth + 1, where, found)


def sites_in_blocks(blocks: Sequence[tuple[str, struct_pb2.Struct]]) -> tuple[list[list[Site]], list[str]]:
    """The sites of each (block id, inputs) and the distinct keys they reference, in order, with
    the per-request limits checked (SPEC 2.3 walk; limits in service/domain/limits.py)."""
    if len(blocks) > MAX_BLOCKS_PER_REQUEST:
        raise ResourceExhausted(f"a request may hold at most {MAX_BLOCKS_PER_REQUEST} blocks, got {len(blocks)}")
    per_block: list[list[Site]] = []
    keys: dict[str, None] = {}
    references = 0
    for i, (block_id, inputs) in enumerate(blocks):
        if not block_id:
            raise InvalidArgument(
                f"blocks[{i}].block_id is required", [FieldViolation(f"blocks[{i}].block_id", "is required")]
            )
        sites = find_sites(inputs, f"blocks[{i}].inputs")
        for site in sites:
            for ref in site.template.references:
                keys[ref.key] = None
                references += 1
        per_block.append(sites)
    if references > MAX_REFERENCES_PER_REQUEST or len(keys) > MAX_KEYS_PER_REQUEST:
        raise ResourceExhausted(
            f"a request may hold at most {MAX_REFERENCES_PER_REQUEST} references to at most "
            f"{MAX_KEYS_PER_REQUEST} distinct keys; got {references} to {len(keys)}"
        )
    return per_block, list(keys)

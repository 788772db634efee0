"""Walking block inputs (google.protobuf.Struct) for `{{KEY}}` references.

The walk works on the protobuf messages in place: the resolved inputs are a copy of the
request's, with only the strings that hold references rewritten, so nothing else is converted.

Field paths (`headers.Authorization`, `messages[2].content`) are built only for the strings that
hold references, and only when asked for: a path repeats every name above it, so building one
for every field costs the square of the nesting. What is remembered across calls is bounded in
bytes (BoundedMemo), since names and paths are the callers' data (F2).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import NamedTuple, TypeVar

from google.protobuf import struct_pb2

from service.domain import templates
from service.domain.errors import FieldViolation, InvalidArgument, ResourceExhausted
from service.domain.keys import require_id
from service.domain.limits import (
    MAX_BLOCKS_PER_REQUEST,
    MAX_INPUT_DEPTH,
    MAX_INPUT_VALUES_PER_REQUEST,
    MAX_KEYS_PER_REQUEST,
    MAX_REFERENCES_PER_REQUEST,
)
from service.domain.templates import OPEN, parse

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMemo(dict[K, V]):
    """A memo bounded in bytes: at most `entries` entries, each put only when its user has found
    it small (each use states its bound per entry). When full it starts over, so callers who keep
    sending new data cost it time, never memory. Read it with `get` (the dict's own)."""

    def __init__(self, entries: int) -> None:
        super().__init__()
        self.entries = entries

    def put(self, key: K, value: V) -> None:
        if len(self) >= self.entries:
            self.clear()
        self[key] = value


# A step from the inputs' root to a field: (parent step or None, object field name or list index).
# Tuples, not objects: the walk makes one for each container and each string with references.
Step = tuple["Step | None", str | int]

# Field paths of ordinary inputs, remembered: the same workflows are resolved run after run.
# Only paths of at most MEMO_PATH_CHARS characters and MEMO_PATH_DEPTH steps are kept: an entry
# (the path, and its key of MEMO_PATH_DEPTH tuples and names) takes about 1.6 KiB at most, in 4-byte
# characters: the memo stays under 3.5 MiB (tests/findings/test_f02_*.py measures it).
MEMO_PATH_CHARS = 96
MEMO_PATH_DEPTH = 6
_paths: BoundedMemo[Step, str] = BoundedMemo(2048)
_remembered_path = _paths.get


def _segment(name: str | int, first: bool) -> str:
    """One step as it reads in a path: `.name` (`name` first), `["X-Api.Key"]` or `[3]`."""
    if isinstance(name, int):
        return f"[{name}]"
    if _PLAIN_NAME.fullmatch(name):
        return name if first else f".{name}"
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'["{escaped}"]'


def path_of(step: Step) -> str:
    """The field path of a step: `headers.Authorization`, `messages[2].content`."""
    path = _remembered_path(step)
    if path is not None:
        return path
    names: list[str | int] = []
    parent: Step | None = step
    while parent is not None:
        parent, name = parent
        names.append(name)
    names.reverse()
    # One join of the segments: no path of a parent is built on the way.
    path = "".join([_segment(names[0], True), *(_segment(n, False) for n in names[1:])])
    if len(path) <= MEMO_PATH_CHARS and len(names) <= MEMO_PATH_DEPTH:
        _paths.put(step, path)
    return path


class PathSizes:
    """The UTF-8 length of steps' paths, without building them, each step's share computed once
    (for one call: it is keyed by the steps of that call's inputs). A path repeats the names
    above it, so sizing thousands of deep paths by building them could take gigabytes."""

    def __init__(self) -> None:
        self._sizes: dict[int, tuple[Step, int]] = {}

    def __call__(self, step: Step) -> int:
        known = self._sizes.get(id(step))
        if known is not None:
            return known[1]
        parent, name = step
        segment = _segment(name, parent is None)
        size = len(segment) if segment.isascii() else len(segment.encode("utf-8"))
        if parent is not None:
            size += self(parent)
        # The step is kept with its size so that its id cannot be reused while this lives.
        self._sizes[id(step)] = (step, size)
        return size


class Site:
    """One string in the inputs that holds references (or escapes)."""

    __slots__ = ("_path", "depth", "holder", "step", "template")

    def __init__(self, step: Step, holder: struct_pb2.Value, template: templates.Template, depth: int) -> None:
        self.step = step
        self.holder = holder
        self.template = template
        # Levels of objects and lists around the string (1: a field of the inputs themselves).
        self.depth = depth
        self._path: str | None = None

    @property
    def path(self) -> str:
        """The field path of this string (`headers.Authorization`), built on first use."""
        path = self._path
        if path is None:
            path = self._path = path_of(self.step)
        return path


def find_sites(inputs: struct_pb2.Struct, where: str, budget: list[int] | None = None) -> list[Site]:
    """Every string in `inputs` holding a reference or escape, in document order.

    Object keys are never substituted (SPEC 2.3). Raises InvalidArgument past MAX_INPUT_DEPTH,
    ResourceExhausted past the values left in `budget` (MAX_INPUT_VALUES_PER_REQUEST if none).
    """
    found: list[Site] = []
    _walk_struct(inputs, None, 1, where, found, budget if budget is not None else [MAX_INPUT_VALUES_PER_REQUEST])
    return found


def _too_many_values() -> ResourceExhausted:
    return ResourceExhausted(
        f"a request's inputs may hold at most {MAX_INPUT_VALUES_PER_REQUEST} values in all; split the blocks"
    )


def _too_deep(where: str) -> InvalidArgument:
    return InvalidArgument(
        f"{where} nest deeper than {MAX_INPUT_DEPTH} levels",
        [FieldViolation(where, f"nests deeper than {MAX_INPUT_DEPTH} levels")],
    )


# Appending to one list instead of chaining generators, and strings handled in the loop rather
# than by a call each: this walk runs for every resolve. A step is made only for containers and
# for strings that hold references, not for every field.
def _walk_struct(
    struct: struct_pb2.Struct, parent: Step | None, depth: int, where: str, found: list[Site], budget: list[int]
) -> None:
    if depth > MAX_INPUT_DEPTH:
        raise _too_deep(where)
    fields = struct.fields
    # One subtraction per container, not per value: the budget is in budget[0] (shared by every
    # block of the request).
    budget[0] -= len(fields)
    if budget[0] < 0:
        raise _too_many_values()
    # Sorted, because map order is not defined: the "first" failing reference of a block, and
    # the order of the references listed, must not change from one call to the next.
    for name in sorted(fields):
        value = fields[name]
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            text = value.string_value
            if OPEN in text:  # most strings hold no braces
                template = parse(text)
                if template is not None:
                    found.append(Site((parent, name), value, template, depth))
        elif kind == "struct_value":
            _walk_struct(value.struct_value, (parent, name), depth + 1, where, found, budget)
        elif kind == "list_value":
            _walk_list(value.list_value, (parent, name), depth + 1, where, found, budget)


def _walk_list(
    items: struct_pb2.ListValue, parent: Step, depth: int, where: str, found: list[Site], budget: list[int]
) -> None:
    if depth > MAX_INPUT_DEPTH:
        raise _too_deep(where)
    values = items.values
    budget[0] -= len(values)
    if budget[0] < 0:
        raise _too_many_values()
    for i, value in enumerate(values):
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            text = value.string_value
            if OPEN in text:
                template = parse(text)
                if template is not None:
                    found.append(Site((parent, i), value, template, depth))
        elif kind == "struct_value":
            _walk_struct(value.struct_value, (parent, i), depth + 1, where, found, budget)
        elif kind == "list_value":
            _walk_list(value.list_value, (parent, i), depth + 1, where, found, budget)


class Walk(NamedTuple):
    sites: list[list[Site]]  # per block, in document order
    keys: list[str]  # distinct, in order of first use
    references: int  # in all blocks
    strings: int  # holding at least one reference, in all blocks


def walk_blocks(blocks: Sequence[tuple[str, struct_pb2.Struct]]) -> Walk:
    """The sites of each (block id, inputs), the distinct keys they reference and how often, with
    the per-request limits checked (SPEC 2.3 walk; limits in service/domain/limits.py)."""
    if len(blocks) > MAX_BLOCKS_PER_REQUEST:
        raise ResourceExhausted(f"a request may hold at most {MAX_BLOCKS_PER_REQUEST} blocks, got {len(blocks)}")
    per_block: list[list[Site]] = []
    keys: dict[str, None] = {}
    references = strings = 0
    budget = [MAX_INPUT_VALUES_PER_REQUEST]
    for i, (block_id, inputs) in enumerate(blocks):
        require_id(f"blocks[{i}].block_id", block_id)
        sites = find_sites(inputs, f"blocks[{i}].inputs", budget)
        for site in sites:
            if found := site.template.references:
                strings += 1
                references += len(found)
                for ref in found:
                    keys[ref.key] = None
        per_block.append(sites)
    if references > MAX_REFERENCES_PER_REQUEST or len(keys) > MAX_KEYS_PER_REQUEST:
        raise ResourceExhausted(
            f"a request may hold at most {MAX_REFERENCES_PER_REQUEST} references to at most "
            f"{MAX_KEYS_PER_REQUEST} distinct keys; got {references} to {len(keys)}"
        )
    return Walk(per_block, list(keys), references, strings)


def sites_in_blocks(blocks: Sequence[tuple[str, struct_pb2.Struct]]) -> tuple[list[list[Site]], list[str]]:
    """walk_blocks' sites per block and distinct keys."""
    walk = walk_blocks(blocks)
    return walk.sites, walk.keys

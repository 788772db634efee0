"""The fast path of ResolveInputs: plans of requests seen before, and response frames.

Workflows run again and again with the same inputs, so most resolve requests carry blocks whose
exact bytes the server has resolved before. For those, a resolve is: parse the request's ids
(service/api/mirror.py, the blocks stay bytes), look the blocks up (`PlanCache`), look the keys
up in the resolve cache, open the values, and join them into a response frame. Nothing is
walked, rendered or serialized.

- A **plan** is what the server knows of one request's blocks, keyed by their exact bytes, per
  workspace: the distinct keys they reference, and a name for its frames. It holds no value and
  no decision. It is made the second time the same bytes resolve (every block resolved, through
  the ordinary path) in that workspace, so a request seen once costs no memory beyond a 64-bit
  hash. Plans are looked up only after the run is authorised, in the run's workspace only, so
  one tenant can neither use nor time another's; bounded in bytes per workspace and in all.
- A **frame** is the response of one plan for one resolve-cache entry (workspace, run user,
  keys: service/app/cache.py) with the values cut out. Within one entry the sealed values are
  fixed, so every other byte of the response is too: the inputs, every length prefix, the
  references with their offsets, the run user. A frame is cut from a response the ordinary path
  (service/api/resolver.py, the reference implementation) has just made and serialized, at the
  places where it wrote each value, each place checked to hold exactly that value's bytes. It
  is attached to that resolve-cache entry (`FrameKeeper`), so it dies with it (a change
  notification, expiry, eviction), and it counts in the cache's byte budget. A fast resolve
  checks each value's length against its frame before joining.

So the fast path answers, byte for byte, what the ordinary path answered for the same request
and entry (tests/integration/test_fast_path_differential.py). Anything else takes the ordinary
path: blocks not seen before, a resolve-cache miss, a key that does not resolve, a pin that
chose another version, DATA_LOSS (raised alike on both), a value whose length does not fit.
The decisions (which secret, whether the run may, pins, the audit event) are made on both paths
by the same use case (service/app/runs.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from itertools import count
from typing import Final

from service.api.inputs import Site, Step

# A plan is made only for blocks of at most this many bytes in all (larger requests always take
# the ordinary path), and a frame only for responses of at most FRAME_BYTES_MAX.
PLAN_BLOCK_BYTES_MAX: Final = 64 * 1024
FRAME_BYTES_MAX: Final = 256 * 1024
# Each workspace's plans and seen hashes take at most this many bytes, all workspaces together
# PLANS_BYTES_MAX (the least recently used workspace's plans go first).
WORKSPACE_PLANS_BYTES_MAX: Final = 2 * 1024 * 1024
PLANS_BYTES_MAX: Final = 16 * 1024 * 1024
# Requests seen once, per workspace (a hash each).
SEEN_MAX: Final = 4096
# What the objects around the bytes take, as counted (upper bounds for CPython on 64 bits).
_SEEN_BYTES: Final = 120
_PLAN_BYTES: Final = 400
_BLOCK_BYTES: Final = 100
_KEY_BYTES: Final = 120
_WORKSPACE_BYTES: Final = 1200
_PIECE_BYTES: Final = 100

Blocks = tuple[bytes, ...]


class Frame:
    """A response with its values cut out: `pieces` with a None where each value goes (`slots`:
    (index in pieces, index of the value)), and each value's length in bytes."""

    __slots__ = ("lengths", "pieces", "size", "slots")

    def __init__(self, pieces: list[bytes | None], slots: list[tuple[int, int]], lengths: list[int]) -> None:
        self.pieces = pieces
        self.slots = slots
        self.lengths = lengths
        # Counted with its name and place on the entry (service/app/cache.py), the lists and tuples.
        self.size = 800 + sum(_PIECE_BYTES + len(p) for p in pieces if p is not None) + 120 * len(slots)


class Plan:
    """One request's blocks as resolved before (see the module docstring); also the fast path's
    port (service/app/runs.py FramedInputs): its frames' name, and the response from a frame."""

    __slots__ = ("frame_name", "keys", "size")

    def __init__(self, number: int, keys: tuple[str, ...], size: int) -> None:
        self.frame_name = ("frame", number)
        self.keys = keys
        self.size = size

    def render(self, frame: object, values: Sequence[bytes]) -> bytes | None:
        return render(frame, values) if isinstance(frame, Frame) else None


def render(frame: Frame, values: Sequence[bytes]) -> bytes | None:
    """The frame with `values` in their places; None when a value's length is not its slot's."""
    if [len(v) for v in values] != frame.lengths:
        return None
    pieces = frame.pieces.copy()
    for at, value in frame.slots:
        pieces[at] = values[value]
    return b"".join(pieces)  # type: ignore[arg-type]  # every None was filled


class _Workspace:
    __slots__ = ("bytes", "plans", "seen")

    def __init__(self, workspace_id: str) -> None:
        self.plans: OrderedDict[Blocks, Plan] = OrderedDict()
        self.seen: OrderedDict[int, None] = OrderedDict()
        self.bytes = _WORKSPACE_BYTES + 4 * len(workspace_id)


def plan_size(blocks: Blocks, keys: Sequence[str]) -> int:
    return _PLAN_BYTES + sum(_BLOCK_BYTES + len(b) for b in blocks) + sum(_KEY_BYTES + 4 * len(k) for k in keys)


class PlanCache:
    """Plans per workspace, bounded in bytes (see the module docstring)."""

    def __init__(
        self, workspace_bytes: int = WORKSPACE_PLANS_BYTES_MAX, total_bytes: int = PLANS_BYTES_MAX, seen: int = SEEN_MAX
    ) -> None:
        self.workspace_bytes = workspace_bytes
        self.total_bytes = total_bytes
        self.seen_max = seen
        self.bytes = 0
        self._workspaces: OrderedDict[str, _Workspace] = OrderedDict()
        self._numbers = count(1)
        self.hits = 0
        self.made = 0

    def get(self, workspace_id: str, blocks: Blocks) -> Plan | None:
        """The plan of these exact blocks in this workspace, if the server has one."""
        workspace = self._workspaces.get(workspace_id)
        if workspace is None:
            return None
        plan = workspace.plans.get(blocks)
        if plan is not None:
            self.hits += 1
        return plan

    def learn(self, workspace_id: str, blocks: Blocks, keys: Sequence[str]) -> Plan | None:
        """Called when `blocks` resolved in the workspace, every block, through the ordinary
        path: the first time, only their hash is remembered; the second time, a plan is made
        (and returned, as an existing one is). None for blocks too large to plan."""
        if sum(map(len, blocks)) > PLAN_BLOCK_BYTES_MAX:
            return None
        workspaces = self._workspaces
        workspace = workspaces.get(workspace_id)
        if workspace is None:
            workspace = workspaces[workspace_id] = _Workspace(workspace_id)
            self.bytes += workspace.bytes
        else:
            workspaces.move_to_end(workspace_id)
        plan = workspace.plans.get(blocks)
        if plan is not None:
            workspace.plans.move_to_end(blocks)
            return plan
        # Python's hash of bytes is keyed per process (SipHash): a caller cannot aim collisions,
        # and one would only make a plan a call early.
        digest = hash(blocks)
        seen = workspace.seen
        if digest not in seen:
            if len(seen) >= self.seen_max:
                seen.popitem(last=False)
            else:
                self._grow(workspace, _SEEN_BYTES)
            seen[digest] = None
            self._bound(workspace)
            return None
        del seen[digest]
        self._grow(workspace, -_SEEN_BYTES)
        plan = Plan(next(self._numbers), tuple(keys), plan_size(blocks, keys))
        workspace.plans[blocks] = plan
        self._grow(workspace, plan.size)
        self.made += 1
        self._bound(workspace)
        return plan

    def _grow(self, workspace: _Workspace, size: int) -> None:
        workspace.bytes += size
        self.bytes += size

    def _bound(self, workspace: _Workspace) -> None:
        while workspace.bytes > self.workspace_bytes and (workspace.plans or workspace.seen):
            if workspace.plans:
                _, oldest = workspace.plans.popitem(last=False)
                self._grow(workspace, -oldest.size)
            else:
                workspace.seen.popitem(last=False)
                self._grow(workspace, -_SEEN_BYTES)
        while self.bytes > self.total_bytes and len(self._workspaces) > 1:
            _, dropped = self._workspaces.popitem(last=False)
            self.bytes -= dropped.bytes

    def clear(self) -> None:
        self._workspaces.clear()
        self.bytes = 0


# -- cutting a frame from a response ------------------------------------------------------------
#
# Wire format of what is walked (google/protobuf/struct.proto, secrets/v1/resolver.proto): a
# ResolveInputsResponse is BlockResults (field 1); a BlockResult's inputs are field 2, a Struct;
# a Struct's entries are field 1, each an entry with its key (1) and Value (2); a Value holds a
# string (3), a Struct (5) or a ListValue (6); a ListValue's values are field 1.

_LEN: Final = 2
_RESPONSE_BLOCKS: Final = 1 << 3 | _LEN
_BLOCK_INPUTS: Final = 2 << 3 | _LEN
_ENTRY: Final = 1 << 3 | _LEN
_ENTRY_KEY: Final = 1 << 3 | _LEN
_ENTRY_VALUE: Final = 2 << 3 | _LEN
_VALUE_STRING: Final = 3 << 3 | _LEN
_VALUE_STRUCT: Final = 5 << 3 | _LEN
_VALUE_LIST: Final = 6 << 3 | _LEN
_LIST_VALUES: Final = 1 << 3 | _LEN


class _Malformed(Exception):
    """The response is not laid out as expected: no frame is cut."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise _Malformed
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _skip(data: bytes, at: int, wire_type: int) -> int:
    if wire_type == 0:
        return _varint(data, at)[1]
    if wire_type == 1:
        return at + 8
    if wire_type == _LEN:
        size, at = _varint(data, at)
        return at + size
    if wire_type == 5:
        return at + 4
    raise _Malformed


def _fields(data: bytes, at: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, start, end) of each field between `at` and `end`; start and end of a
    length-delimited field's payload, of the whole field otherwise."""
    found = []
    while at < end:
        tag, at = _varint(data, at)
        if tag & 7 == _LEN:
            size, at = _varint(data, at)
            found.append((tag, at, at + size))
            at += size
        else:
            start = at
            at = _skip(data, at, tag & 7)
            found.append((tag, start, at))
    if at != end:
        raise _Malformed
    return found


# A tree of the steps to the strings with references: a name (object) or an index (list) to the
# next level, or to the Site itself.
_Tree = dict["str | int", "_Tree | Site"]


def _tree(sites: Sequence[Site]) -> _Tree:
    root: _Tree = {}
    for site in sites:
        if not site.template.references:
            continue  # escapes only: rendered once and for all, no value in it
        names: list[str | int] = []
        step: Step | None = site.step
        while step is not None:
            step, name = step
            names.append(name)
        node = root
        for name in reversed(names[1:]):
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise _Malformed
            node = child
        node[names[0]] = site
    return root


def _in_struct(data: bytes, at: int, end: int, tree: _Tree, found: list[tuple[int, int, Site]]) -> None:
    for tag, start, stop in _fields(data, at, end):
        if tag != _ENTRY:
            continue
        key: str | None = None
        value: tuple[int, int] | None = None
        for entry_tag, entry_start, entry_stop in _fields(data, start, stop):
            if entry_tag == _ENTRY_KEY:
                key = data[entry_start:entry_stop].decode("utf-8")
            elif entry_tag == _ENTRY_VALUE:
                value = (entry_start, entry_stop)
        below = tree.get(key if key is not None else "")
        if below is not None and value is not None:
            _in_value(data, value[0], value[1], below, found)


def _in_list(data: bytes, at: int, end: int, tree: _Tree, found: list[tuple[int, int, Site]]) -> None:
    index = 0
    for tag, start, stop in _fields(data, at, end):
        if tag != _LIST_VALUES:
            continue
        below = tree.get(index)
        if below is not None:
            _in_value(data, start, stop, below, found)
        index += 1


def _in_value(data: bytes, at: int, end: int, below: _Tree | Site, found: list[tuple[int, int, Site]]) -> None:
    for tag, start, stop in _fields(data, at, end):
        if isinstance(below, Site):
            if tag == _VALUE_STRING:
                found.append((start, stop, below))
        elif tag == _VALUE_STRUCT:
            _in_struct(data, start, stop, below, found)
        elif tag == _VALUE_LIST:
            _in_list(data, start, stop, below, found)


def cut_frame(
    response: bytes, sites: Sequence[Sequence[Site]], texts: Mapping[str, str], keys: Sequence[str]
) -> Frame | None:
    """The frame of a serialized ResolveInputsResponse in which every block resolved: `sites`
    are the walk's (per block), `texts` the values rendered into it and `keys` the order in which
    the fast path will hand the values over. None when the response is larger than
    FRAME_BYTES_MAX or not laid out as expected (each string with references must hold its
    literal parts and values exactly where the template puts them)."""
    if len(response) > FRAME_BYTES_MAX:
        return None
    encoded = {key: text.encode("utf-8") for key, text in texts.items()}
    index = {key: i for i, key in enumerate(keys)}
    if set(index) != set(encoded):
        return None
    try:
        blocks = [(start, stop) for tag, start, stop in _fields(response, 0, len(response)) if tag == _RESPONSE_BLOCKS]
        if len(blocks) != len(sites):
            return None
        found: list[tuple[int, int, Site]] = []
        for (start, stop), block_sites in zip(blocks, sites, strict=True):
            tree = _tree(block_sites)
            if not tree:
                continue
            inputs = [(s, e) for tag, s, e in _fields(response, start, stop) if tag == _BLOCK_INPUTS]
            if len(inputs) != 1:
                return None
            _in_struct(response, inputs[0][0], inputs[0][1], tree, found)
    except (_Malformed, UnicodeDecodeError):
        return None
    if len(found) != sum(1 for block_sites in sites for site in block_sites if site.template.references):
        return None  # a string with references was not found where its path says
    spans: list[tuple[int, int, int]] = []  # (start, end, value index)
    for start, stop, site in sorted(found, key=lambda f: f[0]):
        template = site.template
        at = start
        parts = [p.encode("utf-8") for p in template.parts]
        if response[at : at + len(parts[0])] != parts[0]:
            return None
        at += len(parts[0])
        for ref, part in zip(template.references, parts[1:], strict=True):
            value = encoded[ref.key]
            if response[at : at + len(value)] != value:
                return None
            spans.append((at, at + len(value), index[ref.key]))
            at += len(value)
            if response[at : at + len(part)] != part:
                return None
            at += len(part)
        if at != stop:
            return None
    pieces: list[bytes | None] = []
    slots: list[tuple[int, int]] = []
    at = 0
    for start, stop, value_index in spans:
        pieces.append(response[at:start])
        slots.append((len(pieces), value_index))
        pieces.append(None)
        at = stop
    pieces.append(response[at:])
    return Frame(pieces, slots, [len(encoded[key]) for key in keys])

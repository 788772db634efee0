"""The ordinary path's blocks read and written in protobuf's wire format, for blocks in canonical
form (issue 15: a first-seen request).

The message path (service/api/resolver.py `_resolve`) parses the blocks into upb messages, copies
them into the response, walks them through upb's Python objects, sets each rendered string and
serializes the response deterministically. For blocks already in the form that serialization
writes (fields in order, map entries sorted by key with both key and value written, minimal
varints, no unknown or repeated fields, valid UTF-8), the response's bytes are the request's
with each rendered string and the length prefixes around it rewritten: this module reads such
blocks once, finds the strings with references as the walk does (the same rules, limits, paths
and order), and writes the response directly.

Anything else, including any limit the walk would refuse, makes `scan_blocks` answer None, and
the call takes the message path, which stays the reference implementation and words every
error. `tests/integration/test_fast_path_differential.py` holds the two paths to the same bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from service.api.inputs import Site, Step
from service.domain import templates
from service.domain.errors import DomainError
from service.domain.keys import require_id
from service.domain.limits import (
    MAX_BLOCKS_PER_REQUEST,
    MAX_INPUT_DEPTH,
    MAX_INPUT_VALUES_PER_REQUEST,
    MAX_KEYS_PER_REQUEST,
    MAX_MESSAGE_BYTES,
    MAX_REFERENCES_PER_REQUEST,
)
from service.domain.templates import OPEN

if TYPE_CHECKING:
    from service.app.resolver import FrameKeeper
    from service.app.runs import BlockFailure, Reference

# Tags (field number << 3 | wire type) of the messages read here; every one fits in a byte.
_LEN_1: Final = 0x0A  # BlockInputs.block_id, Struct.fields, entry key, ListValue.values
_LEN_2: Final = 0x12  # BlockInputs.inputs, entry value; BlockResult.inputs; response run_user_id
_NULL: Final = 0x08  # Value.null_value
_NUMBER: Final = 0x11  # Value.number_value (fixed64)
_STRING: Final = 0x1A  # Value.string_value
_BOOL: Final = 0x20  # Value.bool_value
_STRUCT: Final = 0x2A  # Value.struct_value
_LIST: Final = 0x32  # Value.list_value


# upb's deterministic serialization writes a map's string keys in the order of their UTF-8 bytes,
# a key before the keys it is a prefix of ("aa" before "a", "" last): the order of the bytes
# followed by a byte no UTF-8 holds (checked against upb by the differential test).
_LAST: Final = b"\xff"


class NotCanonical(Exception):
    """The blocks are not in the form this module reads: the message path takes the call."""


class WireSite(Site):
    """A string with references (or escapes), as the walk's Site (with no upb holder: nothing
    sets it), with its place: block `block`, the string's payload at [start, end) of its bytes."""

    __slots__ = ("block", "end", "start")

    def __init__(self, step: Step, template: templates.Template, depth: int, block: int, start: int, end: int) -> None:
        super().__init__(step, None, template, depth)  # type: ignore[arg-type]
        self.block = block
        self.start = start
        self.end = end


class Node:
    """A length-delimited field to be written anew: its tag at `at`, its payload at [start, end),
    and what changes within it: the nodes of its fields that change, in place (`children`, in
    the order of the bytes), or, for a Struct whose entries must be sorted, every entry in key
    order (`entries`: (start, end) of the entry and its node, None for one that goes out as it
    came); or the site, for a string."""

    __slots__ = ("at", "children", "end", "entries", "site", "start")

    def __init__(self, at: int, start: int, end: int) -> None:
        self.at = at
        self.start = start
        self.end = end
        self.children: list[Node] = []
        self.entries: list[tuple[int, int, Node | None]] | None = None
        self.site: WireSite | None = None


class ScannedBlock:
    """One block as read: its id, its bytes, the inputs' node (None: no string to rewrite; the
    inputs' payload at [inputs_start, inputs_end)), and its sites in the walk's order."""

    __slots__ = ("block_id", "data", "inputs", "inputs_end", "inputs_start", "sites")

    def __init__(self, block_id: str, data: bytes) -> None:
        self.block_id = block_id
        self.data = data
        self.inputs: Node | None = None
        self.inputs_start = 0
        self.inputs_end = 0
        self.sites: list[WireSite] = []


class Scan:
    """What `scan_blocks` read: the blocks, and, as service/api/inputs.Walk, the distinct keys in
    order of first use and how many references."""

    __slots__ = ("blocks", "keys", "references")

    def __init__(self, blocks: list[ScannedBlock], keys: list[str], references: int) -> None:
        self.blocks = blocks
        self.keys = keys
        self.references = references


def _varint(data: bytes, at: int, end: int) -> tuple[int, int]:
    """The varint at `at` and where it ends; NotCanonical unless minimal and within `end`."""
    value = 0
    shift = 0
    while True:
        if at >= end or shift > 28:  # lengths here are under 2^32
            raise NotCanonical
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and shift:
                raise NotCanonical  # a trailing zero byte: not minimal
            return value, at
        shift += 7


def _length(data: bytes, at: int, end: int) -> tuple[int, int]:
    """A length prefix at `at`: (where the payload starts, where it ends), within `end`."""
    size, start = _varint(data, at, end)
    stop = start + size
    if stop > end:
        raise NotCanonical
    return start, stop


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Reader:
    """Reads one request's blocks; the walk's limits shared by all of them."""

    __slots__ = ("block", "budget", "sites")

    def __init__(self) -> None:
        self.budget = MAX_INPUT_VALUES_PER_REQUEST
        self.sites: list[WireSite] = []
        self.block = 0

    def struct(self, data: bytes, start: int, end: int, parent: Step | None, depth: int) -> Node | None:
        """The node of a Struct at [start, end) when it must be written anew: it holds a site, or
        its entries are not in key order (the response has them sorted, as upb's deterministic
        serialization writes maps); None when its bytes go out as they came."""
        if depth > MAX_INPUT_DEPTH:
            raise NotCanonical
        # Each entry: (name, its key's place in upb's order, at, entry start, key end, value
        # start, value end).
        entries: list[tuple[str, bytes, int, int, int, int, int]] = []
        at = start
        in_order = True
        while at < end:
            if data[at] != _LEN_1:
                raise NotCanonical
            entry_start, entry_end = _length(data, at + 1, end)
            if entry_start >= entry_end or data[entry_start] != _LEN_1:
                raise NotCanonical
            key_start, key_end = _length(data, entry_start + 1, entry_end)
            name = data[key_start:key_end].decode("utf-8")
            place = data[key_start:key_end] + _LAST
            if entries and place <= entries[-1][1]:
                in_order = False
            if key_end >= entry_end or data[key_end] != _LEN_2:
                raise NotCanonical
            value_start, value_end = _length(data, key_end + 1, entry_end)
            if value_end != entry_end:
                raise NotCanonical
            entries.append((name, place, at, entry_start, key_end, value_start, value_end))
            at = entry_end
        self.budget -= len(entries)
        if self.budget < 0:
            raise NotCanonical
        # Walked in the walk's order (sorted names), so that sites come out in its order.
        walked = sorted(entries, key=lambda entry: entry[0])
        for before, after in itertools.pairwise(walked):
            if before[0] == after[0]:
                raise NotCanonical  # a repeated key: upb keeps the last
        nodes: dict[int, Node] = {}
        for name, _, entry_at, entry_start, key_end, value_start, value_end in walked:
            inner = self.value(data, value_start, value_end, (parent, name), depth)
            if inner is not None:
                entry = Node(entry_at, entry_start, value_end)
                value = Node(key_end, value_start, value_end)
                value.children.append(inner)
                entry.children.append(value)
                nodes[entry_at] = entry
        if not nodes and in_order:
            return None
        node = Node(-1, start, end)
        if in_order:
            node.children = [nodes[entry[2]] for entry in entries if entry[2] in nodes]
        else:
            # Written in upb's order of map keys (deterministic serialization).
            entries.sort(key=lambda entry: entry[1])
            node.entries = [(entry[2], entry[6], nodes.get(entry[2])) for entry in entries]
        return node

    def list(self, data: bytes, start: int, end: int, parent: Step, depth: int) -> list[Node]:
        if depth > MAX_INPUT_DEPTH:
            raise NotCanonical
        nodes: list[Node] = []
        at = start
        index = 0
        while at < end:
            if data[at] != _LEN_1:
                raise NotCanonical
            value_start, value_end = _length(data, at + 1, end)
            inner = self.value(data, value_start, value_end, (parent, index), depth)
            if inner is not None:
                value = Node(at, value_start, value_end)
                value.children.append(inner)
                nodes.append(value)
            index += 1
            at = value_end
        self.budget -= index
        if self.budget < 0:
            raise NotCanonical
        return nodes

    def value(self, data: bytes, start: int, end: int, step: Step, depth: int) -> Node | None:
        """The node of a Value's kind when it holds a site; None otherwise. `depth`: the levels of
        objects and lists around it (as the walk counts them)."""
        if start == end:
            return None  # no kind set
        tag = data[start]
        if tag == _STRING:
            text_start, text_end = _length(data, start + 1, end)
            if text_end != end:
                raise NotCanonical
            text = data[text_start:text_end].decode("utf-8")
            if OPEN not in text:
                return None
            template = templates.parse(text)
            if template is None:
                return None
            node = Node(start, text_start, text_end)
            node.site = WireSite(step, template, depth, self.block, text_start, text_end)
            self.sites.append(node.site)
            return node
        if tag in (_STRUCT, _LIST):
            inner_start, inner_end = _length(data, start + 1, end)
            if inner_end != end:
                raise NotCanonical
            if tag == _STRUCT:
                inner = self.struct(data, inner_start, inner_end, step, depth + 1)
                if inner is None:
                    return None
                inner.at = start
                return inner
            children = self.list(data, inner_start, inner_end, step, depth + 1)
            if not children:
                return None
            node = Node(start, inner_start, inner_end)
            node.children = children
            return node
        if tag == _NUMBER:
            if end - start != 9:
                raise NotCanonical
            return None
        if (tag == _NULL and end - start == 2 and data[start + 1] == 0) or (
            tag == _BOOL and end - start == 2 and data[start + 1] in (0, 1)
        ):
            return None
        raise NotCanonical


def scan_blocks(blocks: Sequence[bytes]) -> Scan | None:
    """The blocks read as the walk would read them; None when any is not canonical, or when the
    walk would refuse the request (the message path then says why)."""
    if len(blocks) > MAX_BLOCKS_PER_REQUEST:
        return None
    reader = _Reader()
    scanned: list[ScannedBlock] = []
    keys: dict[str, None] = {}
    references = 0
    try:
        for i, data in enumerate(blocks):
            end = len(data)
            at = 0
            block_id = ""
            if at < end and data[at] == _LEN_1:
                start, at = _length(data, 1, end)
                if start == at:
                    raise NotCanonical  # an empty id is not written
                block_id = data[start:at].decode("utf-8")
            require_id(f"blocks[{i}].block_id", block_id)
            block = ScannedBlock(block_id, data)
            if at < end:
                if data[at] != _LEN_2:
                    raise NotCanonical
                block.inputs_start, block.inputs_end = _length(data, at + 1, end)
                if block.inputs_end != end:
                    raise NotCanonical
                reader.sites = block.sites
                reader.block = i
                block.inputs = reader.struct(data, block.inputs_start, block.inputs_end, None, 1)
            for site in block.sites:
                for ref in site.template.references:
                    keys[ref.key] = None
                    references += 1
            scanned.append(block)
    except (NotCanonical, UnicodeDecodeError, DomainError):
        return None
    if references > MAX_REFERENCES_PER_REQUEST or len(keys) > MAX_KEYS_PER_REQUEST:
        return None
    return Scan(scanned, list(keys), references)


def rewrite(data: bytes, node: Node, texts: dict[int, bytes], out: list[bytes]) -> int:
    """Appends the payload of `node` to `out`, each site's string replaced by `texts[start]`, and
    returns its length."""
    size = 0
    if node.entries is not None:
        for start, end, entry in node.entries:
            if entry is None:
                out.append(data[start:end])
                size += end - start
            else:
                size += _rewrite_field(data, entry, texts, out)
        return size
    at = node.start
    for child in node.children:
        if child.at > at:
            out.append(data[at : child.at])
            size += child.at - at
        size += _rewrite_field(data, child, texts, out)
        at = child.end
    if node.end > at:
        out.append(data[at : node.end])
        size += node.end - at
    return size


# A field path's bytes per level of nesting, at most (as service/api/resolver.py counts them).
PATH_BYTES_PER_LEVEL: Final = 12


class TooLarge(Exception):
    """The response might pass the message size limit: the message path measures and words it."""


class WireWriter:
    """The run's result written as the response's bytes (the port app/runs.py writes to, as
    service/api/resolver.py's _ResponseWriter does on the protobuf response). A block error and
    a block's references are serialized by the servicer's own functions (`error_bytes`,
    `references_bytes`), the same on both paths."""

    __slots__ = (
        "_error_bytes",
        "_errors",
        "_references",
        "_references_bytes",
        "_strings",
        "data",
        "keeper",
        "run_user_id",
        "scan",
        "texts",
    )

    def __init__(
        self,
        scan: Scan,
        run_user_id: str,
        error_bytes: Callable[[BlockFailure], bytes],
        references_bytes: Callable[[list[Reference]], bytes],
    ) -> None:
        self.scan = scan
        self.run_user_id = run_user_id
        self._error_bytes = error_bytes
        self._references_bytes = references_bytes
        count = len(scan.blocks)
        self._strings: list[dict[int, bytes]] = [{} for _ in range(count)]
        self._references: list[bytes] = [b""] * count
        self._errors: list[bytes | None] = [None] * count
        self.texts: Mapping[str, str] = {}
        self.keeper: FrameKeeper | None = None
        self.data = b""

    def check_size(self, failures: Sequence[BlockFailure | None], texts: Mapping[str, str]) -> None:
        """TooLarge when the response might pass MAX_MESSAGE_BYTES: the request's blocks, each
        value's UTF-8 (4 bytes a character at most) times its uses, and for each rewritten string
        and reference what its prefixes, path and key can add, all upper bounds."""
        self.texts = texts
        bound = sum(len(block.data) for block in self.scan.blocks) + 64 * len(self.scan.blocks) + 16
        widest = 4 * max(map(len, texts.values()), default=0)
        for block, failure in zip(self.scan.blocks, failures, strict=True):
            if failure is not None:
                bound += 4 * (len(failure.message) + len(failure.key) + len(failure.field_path)) + 64
                continue
            for site in block.sites:
                bound += 9 * (site.depth + 1)
                for ref in site.template.references:
                    bound += widest + PATH_BYTES_PER_LEVEL * (site.depth + 1) + 4 * len(ref.key) + 64
        if bound > MAX_MESSAGE_BYTES:
            raise TooLarge

    def keep(self, keeper: FrameKeeper) -> None:
        self.keeper = keeper

    def fail_block(self, index: int, failure: BlockFailure) -> None:
        self._errors[index] = self._error_bytes(failure)

    def set_string(self, site: WireSite, text: str) -> None:
        self._strings[site.block][site.start] = text.encode("utf-8")

    def add_references(self, index: int, references: list[Reference]) -> None:
        self._references[index] = self._references_bytes(references)

    def finish(self) -> None:
        out: list[bytes] = []
        for index, block in enumerate(self.scan.blocks):
            result: list[bytes] = []
            if block.block_id:
                block_id = block.block_id.encode("utf-8")
                result += [b"\x0a", encode_varint(len(block_id)), block_id]
            error = self._errors[index]
            if error is not None:
                result += [b"\x22", encode_varint(len(error)), error]
            else:
                inputs: list[bytes] = []
                if block.inputs is None:
                    inputs.append(block.data[block.inputs_start : block.inputs_end])
                    length = block.inputs_end - block.inputs_start
                else:
                    length = rewrite(block.data, block.inputs, self._strings[index], inputs)
                result += [b"\x12", encode_varint(length), *inputs, self._references[index]]
            body = b"".join(result)
            out += [b"\x0a", encode_varint(len(body)), body]
        if self.run_user_id:
            run_user = self.run_user_id.encode("utf-8")
            out += [b"\x12", encode_varint(len(run_user)), run_user]
        self.data = b"".join(out)


def _rewrite_field(data: bytes, node: Node, texts: dict[int, bytes], out: list[bytes]) -> int:
    """Appends the field of `node` (its tag, its new length, its new payload); returns its size."""
    if node.site is not None:
        inner = [texts[node.site.start]]
        length = len(inner[0])
    else:
        inner = []
        length = rewrite(data, node, texts, inner)
    header = bytes([data[node.at]]) + encode_varint(length)
    out.append(header)
    out.extend(inner)
    return len(header) + length

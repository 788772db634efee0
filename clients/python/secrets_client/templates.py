"""The client's copy of the reference syntax (SPEC 2.3), used to find which parts of a resolved
string are secret values, so the Redactor can mask them. It must match the server's
service/domain/templates.py; a test compares the two on generated text."""

from __future__ import annotations

import re
from typing import Final

_TOKEN: Final = re.compile(r"\\\{\{|\{\{ *([A-Za-z0-9_]{1,256}) *\}\}")


def split(text: str) -> tuple[list[str], list[str]] | None:
    """(literal parts, keys) with parts[0] key[0] parts[1] ...; None when nothing to substitute."""
    if "{{" not in text:
        return None
    parts: list[str] = []
    keys: list[str] = []
    current: list[str] = []
    pos = 0
    changed = False
    for match in _TOKEN.finditer(text):
        current.append(text[pos : match.start()])
        if match.group(1) is None:
            current.append("{{")
        else:
            parts.append("".join(current))
            current = []
            keys.append(match.group(1))
        changed = True
        pos = match.end()
    if not changed:
        return None
    current.append(text[pos:])
    parts.append("".join(current))
    return parts, keys


def extract_values(template: str, resolved: str, known: dict[str, str]) -> dict[str, str]:
    """The values that turned `template` into `resolved`, where they can be told apart: every
    value when at most one key in the string is not yet in `known`."""
    found = split(template)
    if found is None:
        return {}
    parts, keys = found
    unknown = {k for k in keys if k not in known}
    if len(unknown) > 1:
        return {}
    if not unknown:
        return {}
    (target,) = unknown
    fixed = sum(len(p) for p in parts) + sum(len(known[k]) for k in keys if k in known)
    count = keys.count(target)
    remainder = len(resolved) - fixed
    if remainder < 0 or remainder % count:
        return {}
    size = remainder // count
    # Walk the string: literal parts and known values are where they must be; the target's
    # value is the `size` characters at each of its places (and must be the same each time).
    pos = 0
    value: str | None = None
    for i, key in enumerate(keys):
        if not resolved.startswith(parts[i], pos):
            return {}
        pos += len(parts[i])
        piece = resolved[pos : pos + size] if key == target else known[key]
        if key == target:
            if value is not None and piece != value:
                return {}
            value = piece
        elif not resolved.startswith(piece, pos):
            return {}
        pos += len(piece)
    if value is None or resolved[pos:] != parts[-1]:
        return {}
    return {target: value}

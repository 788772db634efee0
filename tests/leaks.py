"""Looking for canary values in any encoding a leak could take."""

from __future__ import annotations

import base64
import json
import urllib.parse
import uuid


def canary(label: str = "canary") -> str:
    """A value that cannot appear anywhere by chance."""
    return f"{label}-{uuid.uuid4().hex}"


def encodings(value: str) -> list[bytes]:
    raw = value.encode("utf-8")
    forms = {raw, raw.hex().encode(), raw.hex().upper().encode(), urllib.parse.quote(value).encode()}
    forms.add(json.dumps(value).encode()[1:-1])
    # Base64 depends on where the value starts within a 3-byte group, so encode each of the three
    # alignments and keep the part that does not depend on what follows.
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(raw[offset:])
            forms.add(encoded[: len(encoded) - 4])
    return sorted(forms)


def find_canaries(blob: bytes | str, canaries: list[str]) -> list[str]:
    """The canaries found in `blob`, in any known encoding."""
    data = blob.encode("utf-8", "surrogatepass") if isinstance(blob, str) else blob
    return [c for c in canaries if any(form in data for form in encodings(c))]

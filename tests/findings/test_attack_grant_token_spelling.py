"""Attack: one run grant token could be written several ways.

The decoder took both base64 alphabets and extra padding, so `tok` with a `-` turned into `+`, or
with a `=` appended, was the same grant under another spelling: harmless to the service (same
grant, revocation covered all spellings), but a trap for anything outside it that compares or
deduplicates tokens as text. Now only the canonical spelling decodes.
"""

from __future__ import annotations

import binascii
import os

import pytest

from service.app.grants import _b64, _unb64


def test_only_the_canonical_spelling_of_a_token_part_decodes() -> None:
    for size in range(1, 40):
        data = os.urandom(size)
        text = _b64(data)
        assert _unb64(text) == data
        variants = [text + "=", text + "==", text.replace("-", "+").replace("_", "/")]
        for variant in variants:
            if variant != text:
                with pytest.raises(binascii.Error):
                    _unb64(variant)
    # Unused low bits in the last character: "AB" and "AA" would decode to the same byte.
    assert _b64(b"\x00") == "AA"
    with pytest.raises(binascii.Error):
        _unb64("AB")

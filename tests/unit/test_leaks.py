"""The leak finder itself must find what it looks for, or every no-plaintext test is empty."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from tests.leaks import canary, find_canaries


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"xyz"])
def test_finds_every_encoding_at_every_alignment(prefix: bytes) -> None:
    value = canary("leak")
    raw = value.encode()
    for blob in [
        prefix + raw,
        (prefix + raw).hex().encode(),
        base64.b64encode(prefix + raw + b"tail"),
        base64.urlsafe_b64encode(prefix + raw),
        prefix + urllib.parse.quote(value).encode(),
        json.dumps({"k": prefix.decode() + value}).encode(),
    ]:
        assert find_canaries(blob, [value]) == [value], blob


def test_does_not_find_what_is_not_there() -> None:
    assert find_canaries(b"nothing to see" * 100, [canary()]) == []

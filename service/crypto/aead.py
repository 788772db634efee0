"""The one AEAD primitive: AES-256-GCM with a random 96-bit nonce per message.

Like Tink's AEAD, the interface is encrypt/decrypt with associated data, and every failure to
open is one exception that says nothing about why (a wrong key, a flipped bit and a moved
ciphertext look the same to a caller, which is what keeps it from being an oracle).

Random nonces are safe for up to 2**32 messages per key (NIST SP 800-38D, 8.3); each data key
seals one tenant's values, several orders of magnitude below that.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16


class IntegrityError(Exception):
    """A ciphertext failed authentication."""

    def __init__(self) -> None:
        super().__init__("ciphertext failed authentication")


class Aead:
    """AES-256-GCM under one key. Build one per key, not per call: AESGCM setup is not free."""

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"AES-256-GCM needs a {KEY_BYTES}-byte key, got {len(key)} bytes")
        self._cipher = AESGCM(key)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
            raise IntegrityError()
        return self.decrypt_split(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], associated_data)

    def decrypt_split(self, nonce: bytes, body: bytes, associated_data: bytes) -> bytes:
        """`decrypt` for a ciphertext already split into nonce and body (see envelope.SealedParts)."""
        try:
            return self._cipher.decrypt(nonce, body, associated_data)
        except InvalidTag:
            raise IntegrityError() from None

    def decrypt_many(self, parts: Iterable[tuple[bytes, bytes, bytes]]) -> list[bytes]:
        """`decrypt_split` of each (nonce, body, associated data), in one call: IntegrityError
        when any fails (which one, decrypt_split says)."""
        decrypt = self._cipher.decrypt
        try:
            return [decrypt(nonce, body, ad) for nonce, body, ad in parts]
        except InvalidTag:
            raise IntegrityError() from None

    def __repr__(self) -> str:
        return "Aead(<key hidden>)"

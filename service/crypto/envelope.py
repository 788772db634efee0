"""Sealing values under a tenant's data key.

Sealed value layout (format 1):

    0x01 | data key generation (uint32, big endian) | nonce (12) | ciphertext | tag (16)

The header names the data key that sealed the value; the master key that wraps that data key is
named in the data key's own header (see keyring.py). The associated data binds the header, the
tenant, the scope, the key and the version, so a sealed value copied onto another row, another
tenant, another key or another version fails to open instead of yielding the wrong secret
(Vault binds the storage path the same way in its barrier format 2).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Final

from service.crypto.aead import NONCE_BYTES, TAG_BYTES, Aead, IntegrityError
from service.domain.model import Scope, Tenant
from service.domain.values import SecretValue

VALUE_FORMAT: Final = 1
_HEADER: Final = struct.Struct(">BI")
_AD_TAG: Final = b"secrets.v1/value"


@dataclass(frozen=True, slots=True)
class DataKey:
    tenant: Tenant
    generation: int
    aead: Aead


def _field(data: bytes) -> bytes:
    # Length-prefixed, so no choice of ids can make two different rows share associated data.
    return struct.pack(">I", len(data)) + data


@functools.lru_cache(maxsize=65_536)
def value_associated_data(tenant: Tenant, scope: Scope, key: str, version: int) -> bytes:
    """Remembered: the hot path opens the same few keys again and again (ids and key names only,
    no values)."""
    return b"".join(
        (
            _field(_AD_TAG),
            _field(tenant.kind.value.encode()),
            _field(tenant.id.encode()),
            _field(str(int(scope)).encode()),
            _field(key.encode()),
            _field(str(version).encode()),
        )
    )


def sealed_generation(sealed: bytes) -> int:
    """The generation of the data key that sealed this value."""
    if len(sealed) < _HEADER.size or sealed[0] != VALUE_FORMAT:
        raise IntegrityError()
    return int(_HEADER.unpack_from(sealed)[1])


def seal(data_key: DataKey, scope: Scope, key: str, version: int, value: SecretValue) -> bytes:
    header = _HEADER.pack(VALUE_FORMAT, data_key.generation)
    ad = header + value_associated_data(data_key.tenant, scope, key, version)
    return header + data_key.aead.encrypt(value.encode(), ad)


def open_sealed(data_key: DataKey, scope: Scope, key: str, version: int, sealed: bytes) -> SecretValue:
    return open_prepared(data_key, prepare(data_key.tenant, scope, key, version, sealed))


@dataclass(frozen=True, slots=True)
class Prepared:
    """A sealed value taken apart once, with its associated data built, for opening many times
    (the resolve cache keeps these; each resolve then pays only the AES-GCM open)."""

    generation: int
    nonce: bytes
    body: bytes
    associated_data: bytes


def prepare(tenant: Tenant, scope: Scope, key: str, version: int, sealed: bytes) -> Prepared:
    generation = sealed_generation(sealed)
    if len(sealed) < _HEADER.size + NONCE_BYTES + TAG_BYTES:
        raise IntegrityError()
    header = sealed[: _HEADER.size]
    body = sealed[_HEADER.size :]
    ad = header + value_associated_data(tenant, scope, key, version)
    return Prepared(generation, body[:NONCE_BYTES], body[NONCE_BYTES:], ad)


def open_prepared(data_key: DataKey, prepared: Prepared) -> SecretValue:
    if data_key.generation != prepared.generation:
        raise IntegrityError()
    plaintext = data_key.aead.decrypt_split(prepared.nonce, prepared.body, prepared.associated_data)
    try:
        return SecretValue(plaintext.decode("utf-8"))
    except UnicodeDecodeError:
        raise IntegrityError() from None

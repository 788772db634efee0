"""Sealing values under a tenant's data key.

Sealed value layout (format 2):

    0x02 | data key generation (uint32, big endian) | nonce (12) | ciphertext | tag (16)

The header names the data key that sealed the value; the master key that wraps that data key is
named in the data key's own header (see keyring.py). The associated data binds the header, the
tenant, the scope, the key, the version and the secret's identity (its row id, which a deleted
and re-created secret of the same key does not share), so a sealed value copied onto another
secret, another tenant, another key or another version fails to open instead of yielding the
wrong secret (Vault binds the storage path the same way in its barrier format 2).

Format 1 bound everything but the identity, so a deleted secret's ciphertext replayed onto a
re-created secret of the same key opened as the old value. Format 1 is only ever opened by the
start-up migration that re-seals it as format 2 (service/app/reseal.py); `split_sealed` refuses it.

What a database writer can still do: put back an older copy of a whole secret (its row, version
and sealed value together, or a whole backup): the value then opens as the older value, because
nothing outside the database remembers which version is current. Rollback of a whole row set
cannot be detected by sealing alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from service.crypto.aead import NONCE_BYTES, TAG_BYTES, Aead, IntegrityError
from service.domain.model import Scope, Tenant
from service.domain.values import SecretValue

VALUE_FORMAT: Final = 2
LEGACY_VALUE_FORMAT: Final = 1
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


def value_associated_data(tenant: Tenant, scope: Scope, key: str, version: int, secret_id: int) -> bytes:
    """What a sealed value is bound to: ids, names and numbers only, never a value."""
    return _legacy_associated_data(tenant, scope, key, version) + _field(str(secret_id).encode())


def _legacy_associated_data(tenant: Tenant, scope: Scope, key: str, version: int) -> bytes:
    # Format 1 bound everything but the secret's identity; format 2 appends that identity to it.
    # Only the re-sealing migration uses this alone.
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


def sealed_format(sealed: bytes) -> int:
    return sealed[0] if sealed else 0


def sealed_generation(sealed: bytes) -> int:
    """The generation of the data key that sealed this value."""
    if len(sealed) < _HEADER.size or sealed[0] not in (VALUE_FORMAT, LEGACY_VALUE_FORMAT):
        raise IntegrityError()
    return int(_HEADER.unpack_from(sealed)[1])


def seal(data_key: DataKey, scope: Scope, key: str, version: int, secret_id: int, value: SecretValue) -> bytes:
    header = _HEADER.pack(VALUE_FORMAT, data_key.generation)
    ad = header + value_associated_data(data_key.tenant, scope, key, version, secret_id)
    return header + data_key.aead.encrypt(value.encode(), ad)


def open_sealed(data_key: DataKey, scope: Scope, key: str, version: int, secret_id: int, sealed: bytes) -> SecretValue:
    return open_parts(data_key, split_sealed(data_key.tenant, scope, key, version, secret_id, sealed))


@dataclass(frozen=True, slots=True)
class SealedParts:
    """A sealed value taken apart once, with its associated data built, for opening many times
    (the resolve cache keeps these; each resolve then pays only the AES-GCM open)."""

    generation: int
    nonce: bytes
    body: bytes
    associated_data: bytes


def _split(sealed: bytes, expected_format: int) -> tuple[int, bytes, bytes]:
    if len(sealed) < _HEADER.size + NONCE_BYTES + TAG_BYTES or sealed[0] != expected_format:
        raise IntegrityError()
    generation = int(_HEADER.unpack_from(sealed)[1])
    return generation, sealed[: _HEADER.size], sealed[_HEADER.size :]


def split_sealed(tenant: Tenant, scope: Scope, key: str, version: int, secret_id: int, sealed: bytes) -> SealedParts:
    generation, header, body = _split(sealed, VALUE_FORMAT)
    ad = header + value_associated_data(tenant, scope, key, version, secret_id)
    return SealedParts(generation, body[:NONCE_BYTES], body[NONCE_BYTES:], ad)


def split_sealed_v1(tenant: Tenant, scope: Scope, key: str, version: int, sealed: bytes) -> SealedParts:
    """A format-1 value taken apart for the re-sealing migration, and for nothing else."""
    generation, header, body = _split(sealed, LEGACY_VALUE_FORMAT)
    ad = header + _legacy_associated_data(tenant, scope, key, version)
    return SealedParts(generation, body[:NONCE_BYTES], body[NONCE_BYTES:], ad)


def open_parts(data_key: DataKey, prepared: SealedParts) -> SecretValue:
    if data_key.generation != prepared.generation:
        raise IntegrityError()
    plaintext = data_key.aead.decrypt_split(prepared.nonce, prepared.body, prepared.associated_data)
    try:
        return SecretValue(plaintext.decode("utf-8"))
    except UnicodeDecodeError:
        raise IntegrityError() from None

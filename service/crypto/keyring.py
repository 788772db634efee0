"""The master keyring (SPEC 4.2): named AES-256 keys, one of them primary.

Master keys never touch a value. They wrap the per-tenant data keys, so rotating a master key
means re-wrapping a few hundred bytes per tenant, never re-sealing secrets. A wrapped data key
starts with a header naming the master key that wrapped it, so old keys keep opening what they
wrapped until `RotateKeys` moves everything to the primary.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets as pysecrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from service.crypto.aead import KEY_BYTES, Aead, IntegrityError

WRAP_FORMAT: Final = 1
_WRAP_AD_PREFIX: Final = b"secrets.v1/data-key\x00"
_CHECK_LABEL: Final = b"secrets.v1/key-check"
MAX_KEY_ID_LENGTH: Final = 64


class KeyringError(Exception):
    """The keyring file is missing, malformed or inconsistent (a configuration problem)."""


class UnknownMasterKey(Exception):
    """A data key is wrapped by a master key that the keyring no longer holds."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"a data key is wrapped by master key {key_id!r}, which the keyring file does not hold; "
            "put it back in the keyring, or run RotateKeys before removing a key"
        )
        self.key_id = key_id


def check_value(material: bytes) -> bytes:
    """The key check value of a master key: HMAC-SHA256 under the key of a fixed label. It tells
    whether two keys are the same key, and (HMAC being a PRF) nothing about the material."""
    return hmac.new(material, _CHECK_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Stranded:
    """Data keys a keyring cannot open: their master key is missing, or its material changed.
    Each maps key id to the data keys known to be wrapped under it; `primary` names the serving
    primary when it is one of them (new data keys are wrapped under it at any moment, by any
    replica, so it counts whatever the known count)."""

    missing: dict[str, int]
    changed: dict[str, int]
    primary: str | None = None

    def __bool__(self) -> bool:
        return bool(self.missing or self.changed)

    def describe(self) -> str:
        """One line naming the key ids and how many data keys each one wraps."""

        def one(key_id: str, n: int) -> str:
            count = f"{n} data key{'' if n == 1 else 's'}"
            return f"{key_id!r} ({count}{', and the primary' if key_id == self.primary else ''})"

        def listed(ids: dict[str, int]) -> str:
            return ", ".join(one(key_id, n) for key_id, n in sorted(ids.items()))

        parts = []
        if self.missing:
            parts.append(f"missing master key {listed(self.missing)}")
        if self.changed:
            parts.append(f"master key with changed material {listed(self.changed)}")
        total = sum(self.missing.values()) + sum(self.changed.values())
        return (
            f"the keyring would strand {total} data key{'' if total == 1 else 's'}: {'; '.join(parts)}; "
            "restore the keyring file that holds these keys (remove a key only after Operations/RotateKeys "
            "has moved every data key off it, and never change a key's material under the same id)"
        )


def stranded(
    keyring: Keyring, in_use: Mapping[str, int], recorded: Mapping[str, bytes], serving: Keyring | None = None
) -> Stranded:
    """What `keyring` cannot open, given how many data keys each master key id wraps (`in_use`)
    and the check values recorded for key ids (`recorded`). A recorded key id whose material
    differs counts even when no data key uses it: the id was seen with other material.

    `serving`, when `keyring` would replace it, adds what a count read earlier cannot know: its
    primary may wrap new data keys at any moment, so it must stay; and its keys' materials count
    as recorded (another replica may have wrapped data keys under any of them)."""
    checks = keyring.check_values
    known = dict(recorded)
    primary = None
    if serving is not None:
        known = {**serving.check_values, **known}
        if serving.primary_id not in checks or not hmac.compare_digest(
            known[serving.primary_id], checks[serving.primary_id]
        ):
            primary = serving.primary_id
    missing = {k: n for k, n in in_use.items() if n > 0 and k not in checks}
    if primary is not None and primary not in checks:
        missing.setdefault(primary, 0)
    changed = {k: in_use.get(k, 0) for k, v in known.items() if k in checks and not hmac.compare_digest(v, checks[k])}
    return Stranded(missing, changed, primary)


@dataclass(frozen=True, slots=True)
class WrappedKeyHeader:
    master_key_id: str
    body_offset: int


def parse_wrapped_header(wrapped: bytes) -> WrappedKeyHeader:
    if len(wrapped) < 2 or wrapped[0] != WRAP_FORMAT:
        raise IntegrityError()
    id_len = wrapped[1]
    end = 2 + id_len
    if id_len == 0 or len(wrapped) < end:
        raise IntegrityError()
    try:
        key_id = wrapped[2:end].decode("ascii")
    except UnicodeDecodeError:
        raise IntegrityError() from None
    return WrappedKeyHeader(key_id, end)


class Keyring:
    def __init__(self, keys: dict[str, bytes], primary: str) -> None:
        if not keys:
            raise KeyringError("the keyring holds no keys")
        if primary not in keys:
            raise KeyringError(f"the primary key {primary!r} is not among the keyring's keys")
        for key_id, material in keys.items():
            if not key_id or len(key_id) > MAX_KEY_ID_LENGTH or not key_id.isascii() or not key_id.isprintable():
                raise KeyringError(f"key id {key_id!r} must be 1-{MAX_KEY_ID_LENGTH} printable ASCII characters")
            if len(material) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} must be {KEY_BYTES} bytes, got {len(material)}")
        self._aeads = {key_id: Aead(material) for key_id, material in keys.items()}
        self._materials = dict(keys)
        self._derived: dict[tuple[str, bytes], bytes] = {}
        self.check_values: dict[str, bytes] = {key_id: check_value(material) for key_id, material in keys.items()}
        self.primary_id = primary

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._aeads)

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary_id!r}, keys={self.key_ids!r})"

    @classmethod
    def from_json(cls, data: Any) -> Keyring:
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeyringError('the keyring must be {"primary": "<id>", "keys": [{"id": ..., "material": ...}]}')
        keys: dict[str, bytes] = {}
        for entry in data["keys"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise KeyringError("every keyring entry needs a string id")
            key_id = entry["id"]
            if key_id in keys:
                raise KeyringError(f"key id {key_id!r} appears twice")
            try:
                keys[key_id] = base64.b64decode(str(entry.get("material", "")), validate=True)
            except binascii.Error:
                raise KeyringError(f"key {key_id!r}: material is not base64") from None
        primary = data.get("primary")
        if not isinstance(primary, str):
            raise KeyringError("the keyring needs a string primary key id")
        return cls(keys, primary)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeyringError(f"keyring file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise KeyringError(f"keyring file {path} cannot be read as JSON: {type(exc).__name__}") from None
        return cls.from_json(data)

    def derive(self, key_id: str, info: bytes) -> bytes:
        """A 32-byte key for another purpose (`info` names it), derived with HKDF-SHA256 from the
        master key `key_id`; remembered per keyring. UnknownMasterKey when the keyring lacks it."""
        found = self._derived.get((key_id, info))
        if found is None:
            material = self._materials.get(key_id)
            if material is None:
                raise UnknownMasterKey(key_id)
            found = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)
            self._derived[(key_id, info)] = found
        return found

    def wrap(self, tenant: str, data_key: bytes) -> bytes:
        key_id = self.primary_id.encode("ascii")
        header = bytes([WRAP_FORMAT, len(key_id)]) + key_id
        return header + self._aeads[self.primary_id].encrypt(data_key, header + _WRAP_AD_PREFIX + tenant.encode())

    def unwrap(self, tenant: str, wrapped: bytes) -> bytes:
        """Opens a wrapped data key. The tenant is associated data: a key moved to another tenant's
        row fails here instead of opening that tenant's values with the wrong key."""
        header = parse_wrapped_header(wrapped)
        aead = self._aeads.get(header.master_key_id)
        if aead is None:
            raise UnknownMasterKey(header.master_key_id)
        head = wrapped[: header.body_offset]
        return aead.decrypt(wrapped[header.body_offset :], head + _WRAP_AD_PREFIX + tenant.encode())


def new_keyring_document(key_ids: list[str] | None = None, primary: str | None = None) -> dict[str, Any]:
    ids = key_ids or ["k1"]
    return {
        "primary": primary or ids[-1],
        "keys": [{"id": i, "material": base64.b64encode(pysecrets.token_bytes(KEY_BYTES)).decode()} for i in ids],
    }


def write_private_json(path: Path, document: dict[str, Any]) -> None:
    """Writes a file only its owner can read: created with mode 0600 (never world-readable, not
    even for a moment), then renamed over the old one, so a server re-reading the file sees the
    old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(document, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise

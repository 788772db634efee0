"""AEAD, keyring and envelope: what opens, and what must not."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from service.crypto.aead import Aead, IntegrityError
from service.crypto.envelope import DataKey, open_sealed, seal, sealed_generation
from service.crypto.keyring import (
    Keyring,
    KeyringError,
    UnknownMasterKey,
    new_keyring_document,
    parse_wrapped_header,
    write_private_json,
)
from service.domain.model import Scope, Tenant, TenantKind
from service.domain.values import SecretValue

WS = Tenant(TenantKind.WORKSPACE, "ws1")


def data_key(tenant: Tenant = WS, generation: int = 1, material: bytes | None = None) -> DataKey:
    return DataKey(tenant, generation, Aead(material or os.urandom(32)))


def test_aead_round_trip_and_associated_data_binding() -> None:
    aead = Aead(os.urandom(32))
    sealed = aead.encrypt(b"plain", b"ad")
    assert aead.decrypt(sealed, b"ad") == b"plain"
    assert b"plain" not in sealed
    with pytest.raises(IntegrityError):
        aead.decrypt(sealed, b"other ad")
    with pytest.raises(IntegrityError):
        aead.decrypt(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"ad")
    with pytest.raises(IntegrityError):
        aead.decrypt(b"short", b"ad")


def test_aead_nonces_differ_per_message() -> None:
    aead = Aead(os.urandom(32))
    assert aead.encrypt(b"x", b"") != aead.encrypt(b"x", b"")


def test_sealed_value_names_its_data_key_and_opens_only_where_it_belongs() -> None:
    key = data_key(generation=7)
    sealed = seal(key, Scope.WORKSPACE, "API_KEY", 3, 41, SecretValue("canary-value"))
    assert sealed_generation(sealed) == 7
    assert b"canary-value" not in sealed
    assert open_sealed(key, Scope.WORKSPACE, "API_KEY", 3, 41, sealed).reveal() == "canary-value"
    for scope, name, version, secret_id in [
        (Scope.PERSONAL, "API_KEY", 3, 41),  # another scope
        (Scope.WORKSPACE, "OTHER", 3, 41),  # another key: a value copied onto another row
        (Scope.WORKSPACE, "API_KEY", 2, 41),  # another version
        (Scope.WORKSPACE, "API_KEY", 3, 42),  # another secret of the same key (deleted and re-created)
    ]:
        with pytest.raises(IntegrityError):
            open_sealed(key, scope, name, version, secret_id, sealed)
    other_tenant = DataKey(Tenant(TenantKind.WORKSPACE, "ws2"), 7, key.aead)
    with pytest.raises(IntegrityError):
        open_sealed(other_tenant, Scope.WORKSPACE, "API_KEY", 3, 41, sealed)


def test_any_flipped_byte_fails() -> None:
    key = data_key()
    sealed = seal(key, Scope.WORKSPACE, "K", 1, 1, SecretValue("v"))
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(IntegrityError):
            open_sealed(key, Scope.WORKSPACE, "K", 1, 1, bytes(tampered))


def test_keyring_wraps_under_primary_and_opens_with_any_held_key() -> None:
    doc = new_keyring_document(["k1", "k2"])
    ring = Keyring.from_json(doc)
    assert ring.primary_id == "k2"
    wrapped = ring.wrap("w:ws1", b"d" * 32)
    assert parse_wrapped_header(wrapped).master_key_id == "k2"
    assert ring.unwrap("w:ws1", wrapped) == b"d" * 32
    with pytest.raises(IntegrityError):
        ring.unwrap("w:ws2", wrapped)  # a wrapped key moved to another tenant
    only_k1 = Keyring.from_json({"primary": "k1", "keys": [k for k in doc["keys"] if k["id"] == "k1"]})
    with pytest.raises(UnknownMasterKey):
        only_k1.unwrap("w:ws1", wrapped)


def test_keyring_repr_shows_no_material() -> None:
    doc = new_keyring_document(["k1"])
    ring = Keyring.from_json(doc)
    material = doc["keys"][0]["material"]
    assert material not in repr(ring)
    assert "hidden" in repr(Aead(base64.b64decode(material)))


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"primary": "k9", "keys": [{"id": "k1", "material": base64.b64encode(b"x" * 32).decode()}]},
        {"primary": "k1", "keys": [{"id": "k1", "material": base64.b64encode(b"short").decode()}]},
        {"primary": "k1", "keys": [{"id": "k1", "material": "not base64!"}]},
        {"primary": "k1", "keys": [{"id": "k1", "material": ""}, {"id": "k1", "material": ""}]},
    ],
)
def test_bad_keyrings_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(KeyringError):
        Keyring.from_json(doc)


def test_private_json_is_written_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    write_private_json(path, new_keyring_document())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keyring.load(path).key_ids == ["k1"]
    assert json.loads(path.read_text())["primary"] == "k1"


def test_a_broken_keyring_edit_keeps_the_previous_keyring(tmp_path: Path) -> None:
    from service.app.keys import keyring_source

    path = tmp_path / "keyring.json"
    write_private_json(path, new_keyring_document(["k1"]))
    source = keyring_source(path, Keyring.load(path))
    path.write_text('{"primary": "k2", "keys": []}')
    assert source.current().key_ids == ["k1"]
    write_private_json(path, new_keyring_document(["k1", "k2"]))
    assert source.current().primary_id == "k2"
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]  # no temporary files left

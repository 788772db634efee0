"""AEAD, keyring and envelope: what opens, and what must not."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import cast

import pytest

from service.crypto.aead import Aead, IntegrityError
from service.crypto.envelope import DataKey, open_sealed, seal, sealed_generation
from service.crypto.keyring import (
    Keyring,
    KeyringError,
    UnknownMasterKey,
    check_value,
    new_keyring_document,
    parse_wrapped_header,
    stranded,
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
    document = new_keyring_document(["k1"])
    write_private_json(path, document)
    source = keyring_source(path, Keyring.load(path))
    path.write_text('{"primary": "k2", "keys": []}')
    assert source.current().key_ids == ["k1"]
    document["keys"].append(new_keyring_document(["k2"])["keys"][0])
    document["primary"] = "k2"
    write_private_json(path, document)
    assert source.current().primary_id == "k2"
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]  # no temporary files left


def test_check_values_tell_keys_apart_and_show_nothing_of_them() -> None:
    one, other = os.urandom(32), os.urandom(32)
    assert check_value(one) == check_value(bytes(one)) and len(check_value(one)) == 32
    assert check_value(one) != check_value(other)
    assert one not in check_value(one) and check_value(one) != hashlib.sha256(one).digest()
    keyring = Keyring({"k1": one, "k2": other}, "k2")
    assert keyring.check_values == {"k1": check_value(one), "k2": check_value(other)}
    assert one.hex() not in repr(keyring) and check_value(one).hex() not in repr(keyring)


def test_stranded_names_missing_and_changed_keys_with_their_data_key_counts() -> None:
    k1, k2, k3 = os.urandom(32), os.urandom(32), os.urandom(32)
    recorded = {"k1": check_value(k1), "k2": check_value(k2)}
    in_use = {"k1": 3, "k2": 1, "gone": 0}
    assert not stranded(Keyring({"k1": k1, "k2": k2}, "k2"), in_use, recorded)
    assert not stranded(Keyring({"k2": k2, "k3": k3}, "k3"), {"k2": 4}, recorded)  # k1 wraps nothing now
    problem = stranded(Keyring({"k2": k2}, "k2"), in_use, recorded)
    assert (problem.missing, problem.changed) == ({"k1": 3}, {})
    assert "missing master key 'k1' (3 data keys)" in problem.describe()
    problem = stranded(Keyring({"k1": k3, "k2": k2}, "k2"), in_use, recorded)
    assert (problem.missing, problem.changed) == ({}, {"k1": 3})
    # A recorded id with other material is refused even when no data key uses it.
    assert stranded(Keyring({"k1": k3, "k2": k2}, "k2"), {"k2": 1}, recorded).changed == {"k1": 0}
    assert "\n" not in problem.describe() and k1.hex() not in problem.describe()


def test_a_reload_may_not_drop_or_change_the_serving_primary_whatever_the_counts(tmp_path: Path) -> None:
    """Any replica may wrap a new data key under the primary at any moment, so a count read
    earlier cannot show that nothing uses it; and no key the server holds may change material."""
    from service.app.keys import keyring_source

    path = tmp_path / "keyring.json"
    document = new_keyring_document(["k1"])
    write_private_json(path, document)
    source = keyring_source(path, Keyring.load(path))
    original = source.current()
    for bad in (
        {"primary": "k2", "keys": new_keyring_document(["k2"])["keys"]},  # k1 dropped
        new_keyring_document(["k1"]),  # k1 with other material
    ):
        write_private_json(path, bad)
        assert source.current() is original
    document["keys"].append(new_keyring_document(["k2"])["keys"][0])
    document["primary"] = "k2"
    write_private_json(path, document)
    assert source.current().key_ids == ["k1", "k2"]
    write_private_json(path, new_keyring_document(["k1", "k2"]))  # k1 and k2 with other material
    assert source.current().key_ids == ["k1", "k2"] and source.current().primary_id == "k2"
    assert source.current().check_values == Keyring.from_json(document).check_values


def test_usable_says_whether_the_keyring_opens_every_data_key_in_use(tmp_path: Path) -> None:
    from service.app.keys import DataKeys, keyring_source
    from service.store.pool import Database
    from service.watched import WatchedFile

    path = tmp_path / "keyring.json"
    write_private_json(path, new_keyring_document(["k1"]))
    source = keyring_source(path, Keyring.load(path))
    keys = DataKeys(cast(Database, None), source)
    assert not keys.usable()  # nothing known of the database yet
    mine = source.current().check_values["k1"]
    source.use.learn({"k1": 2}, {"k1": mine})
    assert keys.usable()
    source.use.learn({"k1": 2, "k0": 1}, {"k1": mine})  # a data key under a key this keyring lacks
    assert not keys.usable()
    source.use.learn({"k1": 2}, {"k1": bytes(32)})  # k1 recorded with other material
    assert not keys.usable()
    source.use.learn({"k1": 2}, {"k1": mine})
    source.use.count("k0")
    assert not keys.usable()

    class Broken(WatchedFile[Keyring]):
        def current(self) -> Keyring:
            raise RuntimeError("boom")

    assert DataKeys(cast(Database, None), Broken("keyring", None, source.current(), Keyring.load, ())).usable() is False

"""F6: a keyring change that strands data keys (a master key removed, or its material changed,
while data keys are wrapped under it) is refused by the tool, by a running server's reload, and
at start-up with one line and exit code 2 (SPEC 4.2)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets as pysecrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from service.config import Settings
from service.crypto.keyring import new_keyring_document, write_private_json
from service.server import Running, start
from service.tools import new_keyring_main
from tests import pg
from tests.api import ADMIN, Api, P, W, set_, to_dict, uid
from tests.conftest import write_principals
from tests.proc import ROOT

TENANTS = 4  # two workspaces and two users


class Instance:
    def __init__(self, running: Running) -> None:
        self.running = running
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        self.api = Api(self.channel)

    async def close(self) -> None:
        await self.channel.close(None)
        await self.running.stop(grace=1)


@pytest.fixture
async def own_database(pg_admin_url: str) -> AsyncIterator[str]:
    url = await pg.create_database(pg_admin_url)
    yield url
    await pg.drop_database(pg_admin_url, url)


async def launch(url: str, keyring: Path, principals: Path, data: Path) -> Instance:
    settings = Settings(
        listen="127.0.0.1:0", database_url=url, data_dir=data, keyring_file=keyring, principals_file=principals
    )
    return Instance(await start(settings))


async def fill(api: Api) -> dict[tuple[str, str], str]:
    """Saves a workspace and a personal secret for two users: four data keys under the primary."""
    expected = {}
    for _ in range(2):
        ws, user = uid("ws"), uid("user")
        await api.member(ws, user, ADMIN)
        shared, own = f"shared-{uid('v')}", f"own-{uid('v')}"
        await api.save(ws, user, W, set_("SHARED", shared))
        await api.save(ws, user, P, set_("OWN", own))
        expected[(ws, user)] = f"{shared}|{own}"
    return expected


async def resolves(api: Api, expected: dict[tuple[str, str], str]) -> None:
    for (ws, user), want in expected.items():
        reply = await api.resolve(ws, {"b": {"v": "{{SHARED}}|{{OWN}}"}}, user=user)
        assert to_dict(reply.blocks[0].inputs) == {"v": want}


def without(document: dict[str, Any], key_id: str) -> dict[str, Any]:
    return {**document, "keys": [k for k in document["keys"] if k["id"] != key_id]}


def with_new_material(document: dict[str, Any], key_id: str) -> dict[str, Any]:
    fresh = base64.b64encode(pysecrets.token_bytes(32)).decode()
    return {**document, "keys": [{**k, "material": fresh} if k["id"] == key_id else k for k in document["keys"]]}


async def test_tool_refuses_to_remove_a_key_that_data_keys_use(
    own_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document(["k1"]))
    principals = write_principals(tmp_path / "principals.json")
    first = await launch(own_database, keyring, principals, tmp_path / "a")
    try:
        await fill(first.api)
    finally:
        await first.close()
    assert await asyncio.to_thread(new_keyring_main, [str(keyring), "--add-key", "k2"]) == 0
    before = keyring.read_text()
    capsys.readouterr()

    # The database named as the server takes it (SECRETS_DATABASE_URL): refused, with the count.
    monkeypatch.setenv("SECRETS_DATABASE_URL", own_database)
    rc = await asyncio.to_thread(new_keyring_main, [str(keyring), "--remove-key", "k1"])
    err = capsys.readouterr().err
    assert rc == 1 and f"'k1' still wraps {TENANTS} data keys" in err
    # Named on the command line: the same.
    rc = await asyncio.to_thread(new_keyring_main, [str(keyring), "--remove-key", "k1", "--database-url", own_database])
    assert rc == 1
    # Without any database: refused, saying how to proceed.
    monkeypatch.delenv("SECRETS_DATABASE_URL")
    assert await asyncio.to_thread(new_keyring_main, [str(keyring), "--remove-key", "k1"]) == 1
    err = capsys.readouterr().err
    assert "--database-url" in err and "--force-unchecked" in err
    assert keyring.read_text() == before


@pytest.mark.parametrize("change", ["removed", "changed"])
async def test_running_server_refuses_a_reload_that_strands_data_keys_and_keeps_serving(
    own_database: str, tmp_path: Path, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    keyring = tmp_path / "keyring.json"
    document = new_keyring_document(["k1"])
    write_private_json(keyring, document)
    principals = write_principals(tmp_path / "principals.json")
    writer = await launch(own_database, keyring, principals, tmp_path / "a")
    try:
        expected = await fill(writer.api)
    finally:
        await writer.close()
    # A server that has not opened any of these data keys yet: whatever it resolves after the
    # change needs the keyring it then holds.
    reader = await launch(own_database, keyring, principals, tmp_path / "b")
    try:
        # The operator adds k2 as primary: taken.
        document["keys"].append(new_keyring_document(["k2"])["keys"][0])
        document["primary"] = "k2"
        write_private_json(keyring, document)
        assert reader.running.keys.keyring.current().primary_id == "k2"

        # ... then drops k1 (or changes it) without RotateKeys: refused, and values still open.
        bad = without(document, "k1") if change == "removed" else with_new_material(document, "k1")
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            write_private_json(keyring, bad)
            await resolves(reader.api, expected)
        refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "'k1'" in r.getMessage()]
        assert refused, "the refused reload is logged at ERROR, naming the key"
        assert f"'k1' ({TENANTS} data keys)" in refused[0]
        assert "k1" in reader.running.keys.keyring.current().key_ids  # the previous keyring serves on
        assert reader.running.keys.usable()

        # A keyring that keeps k1 as it was is taken again.
        write_private_json(keyring, document)
        await resolves(reader.api, expected)
        assert reader.running.keys.usable()
    finally:
        await reader.close()


async def stranding_start(url: str, tmp_path: Path, change: str) -> tuple[int, list[str]]:
    """Fills a database under k1, then starts `python -m service` with k1 removed or changed;
    returns its exit code and output lines."""
    keyring = tmp_path / "keyring.json"
    document = new_keyring_document(["k1"])
    write_private_json(keyring, document)
    principals = write_principals(tmp_path / "principals.json")
    first = await launch(url, keyring, principals, tmp_path / "a")
    try:
        await fill(first.api)
    finally:
        await first.close()
    document["keys"].append(new_keyring_document(["k2"])["keys"][0])
    document["primary"] = "k2"
    bad = without(document, "k1") if change == "removed" else with_new_material(document, "k1")
    write_private_json(keyring, bad)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_")}
    env |= {
        "SECRETS_LISTEN": "127.0.0.1:0",
        "SECRETS_DATABASE_URL": url,
        "SECRETS_KEYRING_FILE": str(keyring),
        "SECRETS_PRINCIPALS_FILE": str(principals),
        "SECRETS_DATA_DIR": str(tmp_path / "b"),
        "SECRETS_LOG_LEVEL": "ERROR",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"the server started with a keyring that strands data keys:\n{err.decode()}") from None
    return proc.returncode or 0, (out + err).decode().splitlines()


async def test_restart_without_a_needed_master_key_exits_2_with_one_line(own_database: str, tmp_path: Path) -> None:
    code, lines = await stranding_start(own_database, tmp_path, "removed")
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "'k1'" in lines[0] and f"({TENANTS} data keys)" in lines[0] and "missing" in lines[0]


async def test_restart_with_changed_material_under_a_known_id_exits_2_with_one_line(
    own_database: str, tmp_path: Path
) -> None:
    code, lines = await stranding_start(own_database, tmp_path, "changed")
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "'k1'" in lines[0] and f"({TENANTS} data keys)" in lines[0] and "changed material" in lines[0]


def test_keyring_json_is_unchanged_by_a_refused_tool_run(tmp_path: Path) -> None:
    """Without a database the tool removes nothing unless told --force-unchecked."""
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document(["k1", "k2"]))
    before = json.loads(keyring.read_text())
    env_url = os.environ.pop("SECRETS_DATABASE_URL", None)
    try:
        assert new_keyring_main([str(keyring), "--remove-key", "k1"]) == 1
        assert json.loads(keyring.read_text()) == before
        assert new_keyring_main([str(keyring), "--remove-key", "k1", "--force-unchecked"]) == 0
        assert [k["id"] for k in json.loads(keyring.read_text())["keys"]] == ["k2"]
    finally:
        if env_url is not None:
            os.environ["SECRETS_DATABASE_URL"] = env_url

"""F12: development mode was a data-loss trap.

With SECRETS_DATABASE_URL set but no SECRETS_KEYRING_FILE the server generated a throwaway
keyring into its data dir and sealed values in a shared database under it; the container image
ran that way by default (development mode, as root, with the embedded Postgres installed); and
every development start printed the saved dev tokens again.

Now: config refuses a database URL without a keyring file (one line, exit 2; a generated keyring
is only for the embedded database, SPEC 4.1); dev tokens are printed once, on the start that
generated them, and later banners say where they are kept; the image is production by default,
runs as a numeric user, and does not install the embedded Postgres (the `[embedded]` extra),
which `make` installs for development.

There is no container engine here, so the Dockerfile is checked by what it says (its USER is read,
not run: the interpreter here lives under a directory only root may enter) and by running the real
server with exactly the environment it gives, without pgserver, as the image has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import devmode
from service.config import ConfigError, Settings
from service.server import load_essentials
from tests.conftest import write_principals
from tests.proc import ROOT

# --- the configuration -----------------------------------------------------------------------------


def test_a_database_url_without_a_keyring_file_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SECRETS_DATABASE_URL": "postgresql://db/secrets"})
    message = str(info.value)
    assert "SECRETS_KEYRING_FILE" in message and "embedded" in message and "\n" not in message


@pytest.mark.slow
def test_a_database_url_without_a_keyring_file_exits_2_with_one_line_and_generates_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_")}
    env.update(
        SECRETS_DATABASE_URL="postgresql://nobody@127.0.0.1:1/secrets",
        SECRETS_DATA_DIR=str(tmp_path / "data"),
        SECRETS_LISTEN="127.0.0.1:0",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "service"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "SECRETS_KEYRING_FILE" in lines[0], proc.stderr
    assert not (tmp_path / "data").exists()  # no keyring, no principals generated


# --- dev tokens: printed once ----------------------------------------------------------------------


def test_dev_tokens_are_printed_on_the_start_that_generated_them_and_never_again(tmp_path: Path) -> None:
    settings = Settings(listen="127.0.0.1:0", data_dir=tmp_path / "data")
    first = load_essentials(settings)
    assert first.fresh_tokens and set(first.dev_tokens) == set(devmode.DEV_PRINCIPALS)
    kept = tmp_path / "data" / "dev-tokens.json"
    assert kept.exists()
    first_banner = devmode.banner("127.0.0.1:1", first.dev_tokens, first.fresh_tokens, first.dev_tokens_file)
    assert first.dev_tokens["dev-editor"] in first_banner
    assert str(kept) in first_banner

    again = load_essentials(settings)
    assert not again.fresh_tokens and again.dev_tokens == {}
    later_banner = devmode.banner("127.0.0.1:1", again.dev_tokens, again.fresh_tokens, again.dev_tokens_file)
    for token in first.dev_tokens.values():
        assert token not in later_banner
    assert str(kept) in later_banner  # says where they are kept


# --- the packaging ---------------------------------------------------------------------------------


def dockerfile_runtime() -> tuple[dict[str, str], list[str], str]:
    """The runtime stage's ENV (as a dict), USER lines and full text."""
    text = (ROOT / "Dockerfile").read_text()
    runtime = text[text.rindex("\nFROM ") :]
    joined = re.sub(r"\\\n\s*", " ", runtime)
    env: dict[str, str] = {}
    users: list[str] = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for key, value in re.findall(r"(\w+)=(\S+)", line[4:]):
                env[key] = value.strip("\"'")
        elif line.startswith("USER "):
            users.append(line[5:].strip())
    return env, users, runtime


def test_the_image_is_production_by_default_and_runs_as_a_numeric_user() -> None:
    env, users, runtime = dockerfile_runtime()
    assert env.get("SECRETS_ENV") == "production"
    assert users, "no USER in the runtime stage"
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]) and not users[-1].startswith("0"), users[-1]
    instructions = "\n".join(line for line in runtime.splitlines() if not line.lstrip().startswith("#"))
    assert "embedded" not in instructions and "pgserver" not in instructions  # not the [embedded] extra


def test_the_embedded_postgres_is_an_optional_extra_that_make_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("pgserver") for d in project["dependencies"])
    assert any(d.startswith("pgserver") for d in project["optional-dependencies"]["embedded"])
    makefile = (ROOT / "Makefile").read_text()
    extras = re.findall(r"pip install[^\n]*?-e '?\.\[([\w,]+)\]", makefile)
    assert extras and "embedded" in extras[0].split(","), extras


# --- the image's environment, run for real ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """What the image has and lacks: a working directory, and a module that hides pgserver, as
    it is not installed there."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "pgserver.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pgserver'\", name='pgserver')\n"
    )
    (tmp_path / "work").mkdir()
    return tmp_path


def image_env(root: Path, **extra: str) -> dict[str, str]:
    """Exactly the runtime stage's ENV, plus what the base image and Docker give every container
    (PATH; HOME=/ for a user with no passwd entry), plus what the operator adds. The port is the
    only change: a free one on the same host, not 50051, which may be in use on this machine."""
    env, _, _ = dockerfile_runtime()
    host = env["SECRETS_LISTEN"].rpartition(":")[0]
    env = {**env, "SECRETS_LISTEN": f"{host}:{free_port()}", "PATH": os.environ["PATH"], "HOME": "/"}
    env["PYTHONPATH"] = str(root / "site")
    env.update(extra)
    return env


@pytest.mark.slow
def test_the_image_environment_alone_refuses_to_start_with_one_line(image_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service"],
        env=image_env(image_root),
        cwd=image_root / "work",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "SECRETS_DATABASE_URL, SECRETS_KEYRING_FILE, SECRETS_PRINCIPALS_FILE" in lines[0]


@pytest.mark.slow
def test_the_image_in_development_mode_without_a_database_says_what_to_do(image_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service"],
        env=image_env(image_root, SECRETS_ENV="development"),
        cwd=image_root / "work",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "SECRETS_DATABASE_URL" in lines[0] and "[embedded]" in lines[0], proc.stderr


@pytest.fixture
async def tcp_database(database_url: str) -> AsyncIterator[str]:
    """The session's database over TCP, as a container reaches its Postgres: the embedded test
    Postgres listens on a Unix socket in a directory only root may enter, so a small proxy
    forwards a TCP port to it."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    if "host" not in query:  # already TCP (SECRETS_TEST_DATABASE_URL)
        yield database_url
        return
    socket_path = f"{query['host'][0]}/.s.PGSQL.{query.get('port', ['5432'])[0]}"

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def forward(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_unix_connection(socket_path)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    proxy = await asyncio.start_server(forward, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    user = parts.username or "postgres"
    yield urlunsplit(("postgresql", f"{user}@127.0.0.1:{port}", parts.path, "", ""))
    proxy.close()


@pytest.mark.slow
async def test_the_image_environment_with_the_three_files_serves_and_stops_cleanly(
    image_root: Path, tcp_database: str, secrets_files: tuple[Path, Path, Path]
) -> None:
    keyring = image_root / "keyring.json"
    principals = image_root / "principals.json"
    shutil.copy(secrets_files[1], keyring)  # the session database's keyring
    write_principals(principals)
    env = image_env(
        image_root,
        SECRETS_DATABASE_URL=tcp_database,
        SECRETS_KEYRING_FILE=str(keyring),
        SECRETS_PRINCIPALS_FILE=str(principals),
    )
    data_dir = Path(env["SECRETS_DATA_DIR"])
    existed = data_dir.exists()
    log_path = image_root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"],
            env=env,
            cwd=image_root / "work",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = env["SECRETS_LISTEN"].rpartition(":")[2]
        began = time.monotonic()
        while f"serving secrets.v1 on 0.0.0.0:{port}" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() - began < 60, log_path.read_text()
            await asyncio.sleep(0.1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", "secrets.v1.Resolver"):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output and "development mode" not in output, output
    # Production writes nothing locally: the image's SECRETS_DATA_DIR was never created.
    assert existed or not data_dir.exists()

"""F11: start-up errors were not one line.

A keyring or principals file that was not valid JSON printed a 35-line traceback and exited 1;
so did a database that refused the connection, and a port already taken. SPEC 4.1: every
start-up error is one line and exit 2. Each case here runs the real `python -m service` with an
environment as an operator would give it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from service.auth import hash_token
from service.crypto.keyring import new_keyring_document, write_private_json
from tests.conftest import write_principals
from tests.proc import ROOT

pytestmark = pytest.mark.slow


def run_server(env: dict[str, str], cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_")}
    full.update({"SECRETS_LISTEN": "127.0.0.1:0", "PYTHONUNBUFFERED": "1"})
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "service"], env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stderr}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{proc.stderr}"
    line = lines[0]
    assert line.startswith("secrets-server: "), line
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document())
    return {
        "SECRETS_KEYRING_FILE": str(keyring),
        "SECRETS_PRINCIPALS_FILE": str(write_principals(tmp_path / "principals.json")),
        "SECRETS_DATA_DIR": str(tmp_path / "data"),
        # Never reached in the file cases: the files are read before the database.
        "SECRETS_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/nothing",
    }


def _no_roles(path: Path) -> None:
    write_private_json(path, {"principals": [{"name": "x", "roles": [], "token_sha256": hash_token("t")}]})


FILE_CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "keyring not JSON": ("SECRETS_KEYRING_FILE", lambda p: p.write_text("{ not json"), "JSON"),
    "principals not JSON": ("SECRETS_PRINCIPALS_FILE", lambda p: p.write_text("{ not json"), "JSON"),
    "keyring missing": ("SECRETS_KEYRING_FILE", lambda p: p.unlink(), "does not exist"),
    "principals missing": ("SECRETS_PRINCIPALS_FILE", lambda p: p.unlink(), "does not exist"),
    "keyring not an object": ("SECRETS_KEYRING_FILE", lambda p: p.write_text("[1, 2]"), "keyring"),
    "principal without roles": ("SECRETS_PRINCIPALS_FILE", _no_roles, "roles"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_a_bad_keyring_or_principals_file_is_one_line_and_exit_2(files: dict[str, str], case: str) -> None:
    variable, spoil, needle = FILE_CASES[case]
    spoil(Path(files[variable]))
    assert_one_line(run_server(files), needle)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SECRETS_WORKERS": "many"}, "SECRETS_WORKERS"),
        ({"SECRETS_LISTEN": "no-port-here"}, "SECRETS_LISTEN"),
        (
            {"SECRETS_TLS_CERT_FILE": "/nonexistent/cert.pem", "SECRETS_TLS_KEY_FILE": "/nonexistent/key.pem"},
            "/nonexistent/key.pem",
        ),
    ],
    ids=["SECRETS_WORKERS", "SECRETS_LISTEN", "TLS files missing"],
)
def test_bad_configuration_is_one_line_and_exit_2(files: dict[str, str], env: dict[str, str], needle: str) -> None:
    assert_one_line(run_server({**files, **env}), needle)


def test_an_unreachable_database_is_one_line_and_exit_2(files: dict[str, str]) -> None:
    line = assert_one_line(run_server(files), "database")
    assert "nobody" not in line  # the URL's user name and password are not printed


def test_a_database_that_refuses_us_is_one_line_and_exit_2(files: dict[str, str], pg_admin_url: str) -> None:
    missing = with_database(pg_admin_url, "no_such_database_f11")
    assert_one_line(run_server({**files, "SECRETS_DATABASE_URL": missing}), "no_such_database_f11")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_port_already_taken_is_one_line_and_exit_2(
    files: dict[str, str], database_url: str, secrets_files: tuple[Path, Path, Path], taken_port: int
) -> None:
    env = {
        **files,
        "SECRETS_DATABASE_URL": database_url,
        "SECRETS_KEYRING_FILE": str(secrets_files[1]),  # the keyring of the session's database
        "SECRETS_LISTEN": f"127.0.0.1:{taken_port}",
    }
    assert_one_line(run_server(env), f"127.0.0.1:{taken_port}")


def without_pgserver(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH that hides the pgserver package, as on an install without the [embedded] extra."""
    blocker = tmp_path / "no-pgserver"
    blocker.mkdir(exist_ok=True)
    (blocker / "pgserver.py").write_text("raise ModuleNotFoundError(\"No module named 'pgserver'\", name='pgserver')\n")
    return {"PYTHONPATH": str(blocker)}


def test_no_database_url_and_no_embedded_postgres_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_server({"SECRETS_DATA_DIR": str(tmp_path / "data"), **without_pgserver(tmp_path)})
    assert_one_line(proc, "SECRETS_DATABASE_URL", "[embedded]")

"""A metrics address that cannot be listened on, or OTEL_* settings the server cannot honour, stop
it before anything starts: one line and exit 2, as every start-up error (SPEC 4.1)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.crypto.keyring import new_keyring_document, write_private_json
from tests.conftest import write_principals
from tests.findings.test_f11_startup_errors_one_line import assert_one_line, run_server

pytestmark = pytest.mark.slow


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document(["k1"]))
    return {
        "SECRETS_KEYRING_FILE": str(keyring),
        "SECRETS_PRINCIPALS_FILE": str(write_principals(tmp_path / "principals.json")),
        # Never reached: the refusal comes first.
        "SECRETS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_a_taken_metrics_port(files: dict[str, str], taken_port: int) -> None:
    proc = run_server({**files, "SECRETS_METRICS_LISTEN": f"127.0.0.1:{taken_port}"})
    assert_one_line(proc, "SECRETS_METRICS_LISTEN", str(taken_port))


def test_a_taken_metrics_port_with_workers(files: dict[str, str], taken_port: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_server(
        {
            **files,
            "SECRETS_WORKERS": "2",
            "SECRETS_LISTEN": f"127.0.0.1:{port}",
            "SECRETS_METRICS_LISTEN": f"127.0.0.1:{taken_port}",
        }
    )
    assert_one_line(proc, "SECRETS_METRICS_LISTEN")


def test_an_exporter_it_does_not_know(files: dict[str, str]) -> None:
    proc = run_server({**files, "OTEL_TRACES_EXPORTER": "zipkin"})
    assert_one_line(proc, "OTEL_TRACES_EXPORTER", "zipkin")

"""Security events are logged at WARNING or ERROR, never at INFO: a refused token, DATA_LOSS, a
refused reload of the principals or keyring file, and resolve audit events dropped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service.app.audit import AuditBuffer
from service.auth import Principals, PrincipalsError, principals_source
from service.observability.calls import CallObserver, _Method
from service.observability.logs import ACCESS_LOGGER, AccessLine
from service.store import repository as repo
from service.watched import WatchedFile


@pytest.mark.parametrize(
    ("code", "level"),
    [
        ("OK", logging.INFO),
        ("NOT_FOUND", logging.INFO),
        ("UNAUTHENTICATED", logging.WARNING),  # a refused token
        ("PERMISSION_DENIED", logging.WARNING),
        ("DATA_LOSS", logging.ERROR),
        ("INTERNAL", logging.ERROR),
    ],
)
def test_access_line_level_follows_the_code(code: str, level: int, caplog: pytest.LogCaptureFixture) -> None:
    observer = CallObserver(())
    method = _Method("/secrets.v1.Resolver/ResolveInputs", "secrets.v1.Resolver", "ResolveInputs", "unary", None)
    with caplog.at_level(logging.DEBUG, logger=ACCESS_LOGGER):
        observer._finish(method, method.path, code, 0.0, None, None)
    (record,) = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert record.levelno == level
    assert isinstance(record.msg, AccessLine) and record.msg.code == code


def test_a_refused_principals_reload_is_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "principals.json"
    path.write_text('{"principals": []}')
    watched: WatchedFile[Principals] = principals_source(path, Principals.load(path))
    path.write_text("{not json")
    watched.reread()
    with caplog.at_level(logging.DEBUG):
        watched.current()
    assert watched.reloads_refused == 1
    refusals = [r for r in caplog.records if r.name == "service.watched"]
    assert refusals and all(r.levelno >= logging.ERROR for r in refusals)


def test_a_refused_keyring_like_reload_keeps_the_old_one_at_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "file.json"
    path.write_text("1")

    def load(p: Path) -> int:
        raise PrincipalsError("bad")

    watched = WatchedFile("keyring", path, 1, load, (PrincipalsError,))
    path.write_text("2")
    watched.reread()
    with caplog.at_level(logging.DEBUG):
        assert watched.current() == 1
    assert watched.reloads_refused == 1
    assert any(r.levelno >= logging.ERROR and "keeping the previous one" in r.getMessage() for r in caplog.records)


def test_dropped_audit_events_are_an_error(caplog: pytest.LogCaptureFixture) -> None:
    buffer = AuditBuffer(None, max_pending=0)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG):
        buffer.add(repo.AuditRecord(principal="exec", action="inputs.resolve", outcome="ok", workspace_id="ws"))
    assert buffer.dropped == 1
    assert any(r.levelno >= logging.ERROR and "dropped" in r.getMessage() for r in caplog.records)

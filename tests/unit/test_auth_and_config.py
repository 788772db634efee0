from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.auth import Principals, PrincipalsError, Role, hash_token
from service.config import ConfigError, Settings
from service.tools import new_token_main


def test_principals_authenticate_by_token_hash() -> None:
    principals = Principals.from_json(
        {
            "principals": [
                {"name": "web", "roles": ["editor"], "token_sha256": hash_token("t-web")},
                {"name": "exec", "roles": ["executor", "ops"], "token_sha256": hash_token("t-exec")},
            ]
        }
    )
    web = principals.authenticate("t-web")
    assert web is not None and web.name == "web" and web.roles == {Role.EDITOR}
    ex = principals.authenticate("t-exec")
    assert ex is not None and ex.roles == {Role.EXECUTOR, Role.OPS}
    assert principals.authenticate("t-wrong") is None
    assert principals.authenticate("") is None
    assert "t-web" not in repr(web) and hash_token("t-web") not in repr(web)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"principals": [{"name": "x", "roles": [], "token_sha256": "0" * 64}]},
        {"principals": [{"name": "x", "roles": ["editor"], "token_sha256": "abc"}]},
        {"principals": [{"name": "x", "roles": ["root"], "token_sha256": "0" * 64}]},
        {"principals": [{"name": "", "roles": ["editor"], "token_sha256": "0" * 64}]},
    ],
)
def test_bad_principals_files_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(PrincipalsError):
        Principals.from_json(doc)


def test_an_empty_principals_list_is_valid_and_lets_nobody_in() -> None:
    # SPEC 4.3: an empty list means no principals (the last token can be revoked).
    assert len(Principals.from_json({"principals": []})) == 0


def test_new_token_prints_a_line_with_only_the_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert new_token_main(["web-editor", "editor"]) == 0
    out, err = capsys.readouterr()
    line = json.loads(out)
    token = err.rsplit(": ", 1)[1].strip()
    assert line == {"name": "web-editor", "roles": ["editor"], "token_sha256": hash_token(token)}
    assert token not in out
    assert Principals.from_json({"principals": [line]}).authenticate(token) is not None


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.listen, s.database_url, s.data_dir, s.log_level, s.env) == (
        "127.0.0.1:50051",
        None,
        Path(".secrets-data"),
        "INFO",
        "development",
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SECRETS_ENV": "production"}, "SECRETS_DATABASE_URL, SECRETS_KEYRING_FILE, SECRETS_PRINCIPALS_FILE"),
        (
            {"SECRETS_ENV": "production", "SECRETS_DATABASE_URL": "postgresql://x", "SECRETS_KEYRING_FILE": "k"},
            "SECRETS_PRINCIPALS_FILE",
        ),
        ({"SECRETS_LOG_LEVEL": "LOUD"}, "SECRETS_LOG_LEVEL"),
        ({"SECRETS_ENV": "staging"}, "SECRETS_ENV"),
        ({"SECRETS_TLS_CERT_FILE": "c"}, "together"),
    ],
)
def test_bad_configuration_is_one_clear_line(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_production_without_files_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service"],
        env={"SECRETS_ENV": "production", "PATH": "/usr/bin:/bin", "SECRETS_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refuses to start without SECRETS_DATABASE_URL" in lines[0]
    assert not (tmp_path / "pg").exists()

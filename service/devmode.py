"""Development mode: a keyring and principals generated into the data dir on first start.

Production (SECRETS_ENV=production) never gets here: it refuses to start without explicit files.
The generated tokens are printed once, at generation, and also kept in `dev-tokens.json` (mode
0600) beside them so that `make run` can show a working grpcurl line again on later starts. That
file exists only in development mode; the principals file itself holds hashes only.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from service.auth import Principals, Role, new_token, principal_line
from service.crypto.keyring import Keyring, new_keyring_document, write_private_json

log = logging.getLogger(__name__)

DEV_PRINCIPALS = {
    "dev-editor": [Role.EDITOR],
    "dev-executor": [Role.EXECUTOR],
    "dev-directory": [Role.DIRECTORY],
    "dev-ops": [Role.OPS],
}


def dev_keyring(data_dir: Path) -> tuple[Path, Keyring]:
    path = data_dir / "keyring.json"
    if not path.exists():
        write_private_json(path, new_keyring_document(["dev1"]))
        log.warning(
            "development mode: generated a master keyring at %s (mode 0600); set SECRETS_KEYRING_FILE in production",
            path,
        )
    return path, Keyring.load(path)


def dev_principals(data_dir: Path) -> tuple[Path, Principals, dict[str, str] | None]:
    """Loads (or first generates) the dev principals; returns the tokens when just generated."""
    path = data_dir / "principals.json"
    tokens_path = data_dir / "dev-tokens.json"
    fresh: dict[str, str] | None = None
    if not path.exists():
        fresh = {name: new_token() for name in DEV_PRINCIPALS}
        document = {
            "principals": [principal_line(name, [r.value for r in DEV_PRINCIPALS[name]], fresh[name]) for name in fresh]
        }
        write_private_json(path, document)
        write_private_json(tokens_path, fresh)
        log.warning("development mode: generated principals at %s; set SECRETS_PRINCIPALS_FILE in production", path)
    return path, Principals.load(path), fresh


def saved_dev_tokens(data_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((data_dir / "dev-tokens.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _grpcurl() -> str:
    """`grpcurl`, or the copy the dev dependencies put next to this interpreter."""
    if shutil.which("grpcurl"):
        return "grpcurl"
    beside = Path(sys.executable).parent / "grpcurl"
    return str(beside) if beside.exists() else "grpcurl"


def banner(listen: str, tokens: dict[str, str], fresh: bool) -> str:
    """How to call the dev server with grpcurl, printed at start in development mode."""
    g = _grpcurl()
    lines = ["", "=" * 78, "Workflow secrets service (development mode) on " + listen]
    if tokens:
        lines.append("Dev tokens" + (" (generated now; kept in the data dir's dev-tokens.json):" if fresh else ":"))
        lines += [f"  {name:14} {token}" for name, token in tokens.items()]
        d, e, x = tokens.get("dev-directory", ""), tokens.get("dev-editor", ""), tokens.get("dev-executor", "")
        lines += [
            "",
            "Try it with grpcurl (reflection is on; health needs no token):",
            f"  {g} -plaintext {listen} list",
            f"  {g} -plaintext {listen} grpc.health.v1.Health/Check",
            f"  {g} -plaintext -H 'authorization: Bearer {d}' \\",
            '    -d \'{"workspace_id":"ws1","user_id":"u1","email":"u1@example.com",'
            '"permission":"WORKSPACE_PERMISSION_ADMIN"}\' \\',
            f"    {listen} secrets.v1.Directory/PutWorkspaceMember",
            f"  {g} -plaintext -H 'authorization: Bearer {e}' -H 'x-user-id: u1' \\",
            '    -d \'{"workspace_id":"ws1","scope":"SCOPE_WORKSPACE","expected_revision":0,'
            '"changes":[{"key":"API_TOKEN","value":"s3cr3t"}]}\' \\',
            f"    {listen} secrets.v1.SecretStore/SaveSecrets",
            f"  {g} -plaintext -H 'authorization: Bearer {x}' \\",
            '    -d \'{"workspace_id":"ws1","trigger":"TRIGGER_MANUAL","triggering_user_id":"u1",'
            '"blocks":[{"block_id":"b1","inputs":{"auth":"Bearer {{API_TOKEN}}"}}]}\' \\',
            f"    {listen} secrets.v1.Resolver/ResolveInputs",
        ]
    else:
        lines.append("Tokens: see the principals you configured (SECRETS_PRINCIPALS_FILE).")
    lines.append("=" * 78)
    return "\n".join(lines)

"""Development mode: a keyring and principals generated into the data dir on first start.

Production (SECRETS_ENV=production) never gets here: it refuses to start without explicit files.
A keyring is generated only for the embedded database (config refuses SECRETS_DATABASE_URL
without SECRETS_KEYRING_FILE): values sealed in a shared database under a key that lives in one
machine's data dir would be lost with that directory.

The generated tokens are printed once, on the start that generated them, and kept in
`dev-tokens.json` (mode 0600) beside them; later starts say where that file is, and do not print
the tokens again (logs are kept and shipped; a token in every start's log is a token leaked).
That file exists only in development mode; the principals file itself holds hashes only.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
from pathlib import Path

from service.auth import Principals, Role, new_token, principal_line
from service.crypto.keyring import Keyring, new_keyring_document, write_private_json

log = logging.getLogger(__name__)

TOKENS_FILE = "dev-tokens.json"

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
    tokens_path = tokens_file(data_dir)
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


def tokens_file(data_dir: Path) -> Path:
    return data_dir / TOKENS_FILE


def _grpcurl() -> str:
    """`grpcurl`, or the copy the dev dependencies put next to this interpreter."""
    if shutil.which("grpcurl"):
        return "grpcurl"
    beside = Path(sys.executable).parent / "grpcurl"
    return str(beside) if beside.exists() else "grpcurl"


def banner(listen: str, tokens: dict[str, str], fresh: bool, kept_in: Path | None = None) -> str:
    """How to call the dev server with grpcurl, printed at start in development mode. `tokens`
    only on the start that generated them; later starts name the file they are kept in."""
    g = _grpcurl()
    lines = ["", "=" * 78, "Workflow secrets service (development mode) on " + listen]
    where = str(kept_in) if kept_in is not None else f"the data dir's {TOKENS_FILE}"
    if tokens or kept_in is not None:
        if tokens:
            lines.append(f"Dev tokens (generated now and printed only this once; kept in {where}, mode 0600):")
            lines += [f"  {name:14} {token}" for name, token in tokens.items()]
            d, e, x = tokens.get("dev-directory", ""), tokens.get("dev-editor", ""), tokens.get("dev-executor", "")
        else:
            read = "python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])'"
            lines.append(f"Dev tokens: printed when they were generated; kept in {where} (mode 0600). To use them:")
            lines += [
                f"  {name.upper().replace('-', '_')}=$({read} {shlex.quote(where)} {name})"
                for name in ("dev-directory", "dev-editor", "dev-executor")
            ]
            d, e, x = "$DEV_DIRECTORY", "$DEV_EDITOR", "$DEV_EXECUTOR"
        lines += [
            "",
            "Try it with grpcurl (reflection is on; health needs no token):",
            f"  {g} -plaintext {listen} list",
            f"  {g} -plaintext {listen} grpc.health.v1.Health/Check",
            f'  {g} -plaintext -H "authorization: Bearer {d}" \\',
            '    -d \'{"workspace_id":"ws1","user_id":"u1","email":"u1@example.com",'
            '"permission":"WORKSPACE_PERMISSION_ADMIN"}\' \\',
            f"    {listen} secrets.v1.Directory/PutWorkspaceMember",
            f"  {g} -plaintext -H \"authorization: Bearer {e}\" -H 'x-user-id: u1' \\",
            '    -d \'{"workspace_id":"ws1","scope":"SCOPE_WORKSPACE","expected_revision":0,'
            '"changes":[{"key":"API_TOKEN","value":"s3cr3t"}]}\' \\',
            f"    {listen} secrets.v1.SecretStore/SaveSecrets",
            f'  {g} -plaintext -H "authorization: Bearer {x}" \\',
            '    -d \'{"workspace_id":"ws1","trigger":"TRIGGER_MANUAL","triggering_user_id":"u1",'
            '"blocks":[{"block_id":"b1","inputs":{"auth":"Bearer {{API_TOKEN}}"}}]}\' \\',
            f"    {listen} secrets.v1.Resolver/ResolveInputs",
        ]
    else:
        lines.append("Tokens: see the principals you configured (SECRETS_PRINCIPALS_FILE).")
    lines.append("=" * 78)
    return "\n".join(lines)

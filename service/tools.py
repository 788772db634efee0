"""Operator tools: `secrets-new-token` and `secrets-new-keyring`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.auth import Role, new_token, principal_line
from service.crypto.keyring import new_keyring_document, write_private_json


def new_token_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="secrets-new-token",
        description="Create a bearer token; print it once, and the principals-file line that holds only its hash.",
    )
    parser.add_argument("name", help="principal name, e.g. web-editor")
    parser.add_argument("roles", nargs="+", choices=[r.value for r in Role], help="roles the principal gets")
    opts = parser.parse_args(argv)
    token = new_token()
    print(f"token (shown once; give it to {opts.name}): {token}", file=sys.stderr)
    print(json.dumps(principal_line(opts.name, opts.roles, token)))
    return 0


def new_keyring_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="secrets-new-keyring", description="Write a new master keyring file (mode 0600)."
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--ids", nargs="+", default=["k1"], help="key ids; the last is primary")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    opts = parser.parse_args(argv)
    if opts.path.exists() and not opts.force:
        print(f"{opts.path} exists; use --force to replace it (data keys wrapped by it would be lost)", file=sys.stderr)
        return 1
    write_private_json(opts.path, new_keyring_document(opts.ids))
    print(f"wrote {opts.path} with keys {', '.join(opts.ids)}; primary {opts.ids[-1]}")
    return 0

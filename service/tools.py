"""Operator tools: `secrets-new-token` and `secrets-new-keyring` (also adds and retires keys)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.auth import Role, new_token, principal_line
from service.crypto.keyring import Keyring, KeyringError, new_keyring_document, write_private_json


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
        prog="secrets-new-keyring",
        description=(
            "Write a new master keyring file (mode 0600), or change one: --add-key makes a new primary key "
            "(then call Operations/RotateKeys), --remove-key retires a key no data key uses any more."
        ),
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--ids", nargs="+", default=["k1"], help="key ids of a new keyring; the last is primary")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument(
        "--add-key", metavar="ID", help="add a new random key to an existing keyring and make it primary"
    )
    parser.add_argument("--remove-key", metavar="ID", help="remove a (non-primary) key from an existing keyring")
    opts = parser.parse_args(argv)
    if opts.add_key or opts.remove_key:
        try:
            document = json.loads(opts.path.read_text())
            Keyring.from_json(document)
        except (OSError, ValueError, KeyringError) as exc:
            print(f"cannot read keyring {opts.path}: {exc}", file=sys.stderr)
            return 1
        if opts.add_key:
            if any(k["id"] == opts.add_key for k in document["keys"]):
                print(f"key {opts.add_key!r} exists already", file=sys.stderr)
                return 1
            document["keys"].append(new_keyring_document([opts.add_key])["keys"][0])
            document["primary"] = opts.add_key
        if opts.remove_key:
            if document["primary"] == opts.remove_key:
                print(f"key {opts.remove_key!r} is the primary; add and rotate to another first", file=sys.stderr)
                return 1
            document["keys"] = [k for k in document["keys"] if k["id"] != opts.remove_key]
        Keyring.from_json(document)
        write_private_json(opts.path, document)
        print(f"{opts.path}: keys {', '.join(k['id'] for k in document['keys'])}; primary {document['primary']}")
        return 0
    if opts.path.exists() and not opts.force:
        print(f"{opts.path} exists; use --force to replace it (data keys wrapped by it would be lost)", file=sys.stderr)
        return 1
    write_private_json(opts.path, new_keyring_document(opts.ids))
    print(f"wrote {opts.path} with keys {', '.join(opts.ids)}; primary {opts.ids[-1]}")
    return 0

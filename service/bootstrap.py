"""`python -m service.bootstrap`: the first keyring and principals of a deployment, made once.

The one-shot init step of docker-compose.yml runs it before the server; it may run again on
every `docker compose up`, so it creates each file only if it is absent and never replaces one
(a replaced keyring would strand every value sealed under the old one):

    python -m service.bootstrap /keys --tokens-file /tokens/tokens.json --owner 10001:10001

- `KEYS_DIR/keyring.json`: a new master keyring (one key, `--key-id`), mode 0600;
- `KEYS_DIR/principals.json`: one principal per `--principal NAME=ROLE[,ROLE]` (by default one
  per role, named after it), holding the tokens' SHA-256 hashes only, mode 0600;
- `--tokens-file`: the tokens themselves (name -> token), mode 0600, written only when the
  principals file was made in the same run. Keep it away from the server (the server needs the
  hashes only): hand each token to its caller, then delete the file.

`--owner UID:GID` gives KEYS_DIR and the files it creates to that user (the init step runs as
root, the server as 10001, and an operator adding a master key later runs as 10001 too, writing
beside the keyring). Nothing is printed but which files were made or kept: never a token.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from service.auth import Role, new_token, principal_line
from service.crypto.keyring import new_keyring_document, write_private_json

KEYRING = "keyring.json"
PRINCIPALS = "principals.json"


def _principal(text: str) -> tuple[str, list[str]]:
    name, sep, roles_text = text.partition("=")
    roles = [r.strip() for r in roles_text.split(",") if r.strip()]
    if not sep or not name.strip() or not roles:
        raise argparse.ArgumentTypeError(f"expected NAME=ROLE[,ROLE], not {text!r}")
    known = {r.value for r in Role}
    unknown = [r for r in roles if r not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown role {unknown[0]!r}; roles are {', '.join(sorted(known))}")
    return name.strip(), roles


def _owner(text: str) -> tuple[int, int]:
    uid, sep, gid = text.partition(":")
    if not (uid.isdigit() and (not sep or gid.isdigit())):
        raise argparse.ArgumentTypeError(f"expected UID:GID (numbers), not {text!r}")
    return int(uid), int(gid or uid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.bootstrap",
        description="Create a master keyring and a principals file in KEYS_DIR, each only if it is absent.",
    )
    parser.add_argument("keys_dir", type=Path, metavar="KEYS_DIR", help=f"where {KEYRING} and {PRINCIPALS} go")
    parser.add_argument(
        "--tokens-file",
        type=Path,
        required=True,
        help="where the new principals' tokens are written (mode 0600); keep it out of the server's reach",
    )
    parser.add_argument("--key-id", default="k1", help="id of the first master key (default k1)")
    parser.add_argument(
        "--principal",
        type=_principal,
        action="append",
        metavar="NAME=ROLE[,ROLE]",
        help="a principal to create (repeatable); default: one per role, named after it",
    )
    parser.add_argument(
        "--owner", type=_owner, metavar="UID:GID", help="give KEYS_DIR and the files created to this user"
    )
    opts = parser.parse_args(argv)

    opts.keys_dir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    keyring = opts.keys_dir / KEYRING
    if keyring.exists():
        print(f"kept {keyring} (exists)")
    else:
        write_private_json(keyring, new_keyring_document([opts.key_id]))
        made.append(keyring)
        print(f"wrote {keyring}: master key {opts.key_id}")

    principals = opts.keys_dir / PRINCIPALS
    if principals.exists():
        print(f"kept {principals} (exists); no tokens written")
    else:
        wanted: list[tuple[str, list[str]]] = opts.principal or [(r.value, [r.value]) for r in Role]
        names = [name for name, _ in wanted]
        if len(set(names)) != len(names):
            print("principal names must differ", file=sys.stderr)
            return 2
        tokens = {name: new_token() for name in names}
        # The tokens first: a principals file without them would be a deployment nobody can call.
        write_private_json(opts.tokens_file, tokens)
        made.append(opts.tokens_file)
        write_private_json(
            principals, {"principals": [principal_line(name, roles, tokens[name]) for name, roles in wanted]}
        )
        made.append(principals)
        print(f"wrote {principals}: principals {', '.join(names)}")
        print(f"wrote their tokens to {opts.tokens_file} (mode 0600): hand them out, then delete that file")

    if opts.owner is not None:
        uid, gid = opts.owner
        for path in [opts.keys_dir, *made]:
            os.chown(path, uid, gid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

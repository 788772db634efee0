"""Operator tools: `secrets-new-token` and `secrets-new-keyring` (also adds and retires keys)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from service.auth import Role, new_token, principal_line
from service.crypto.keyring import Keyring, KeyringError, new_keyring_document, write_private_json


class CannotCount(Exception):
    """The database could not tell how many data keys a master key wraps."""


async def data_keys_under(url: str, key_id: str, timeout: float = 10.0) -> int:
    """How many data keys in the service's database are wrapped under master key `key_id` (read only)."""
    import asyncpg

    from service.store import repository as repo

    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CannotCount(f"cannot connect to the database: {type(exc).__name__}: {exc}") from None
    try:
        counts = await repo.count_data_keys_by_master(conn)
    except asyncpg.UndefinedTableError:
        raise CannotCount("the database has no data_keys table; is it the secrets service's database?") from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CannotCount(f"cannot count data keys: {type(exc).__name__}: {exc}") from None
    finally:
        await conn.close()
    return counts.get(key_id, 0)


def _may_remove(key_id: str, database_url: str | None, force_unchecked: bool) -> str | None:
    """Why `key_id` must not be removed (None: it may). Removing a key that data keys still use
    loses them for good (SPEC 4.2), so the tool counts them in the database, or is told not to."""
    if database_url:
        try:
            n = asyncio.run(data_keys_under(database_url, key_id))
        except CannotCount as exc:
            return f"cannot check that no data key uses key {key_id!r}: {exc}"
        if n:
            return (
                f"key {key_id!r} still wraps {n} data key{'' if n == 1 else 's'}; removing it would lose them for good. "
                "Make another key primary (--add-key) and run Operations/RotateKeys first"
            )
        return None
    if force_unchecked:
        print(f"warning: removing key {key_id!r} without checking the database (--force-unchecked)", file=sys.stderr)
        return None
    return (
        f"refusing to remove key {key_id!r} without checking that no data key uses it: pass --database-url URL "
        "(or set SECRETS_DATABASE_URL) to count them, or, having seen Operations/GetKeyStatus report 0 data keys "
        "under it, pass --force-unchecked"
    )


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
    parser.add_argument(
        "--remove-key",
        metavar="ID",
        help="remove a (non-primary) key from an existing keyring; refused while data keys use it",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=os.environ.get("SECRETS_DATABASE_URL") or None,
        help="the service's database, where --remove-key counts the data keys still wrapped under the key "
        "(default: $SECRETS_DATABASE_URL)",
    )
    parser.add_argument(
        "--force-unchecked",
        action="store_true",
        help="--remove-key without a database to check; only after Operations/GetKeyStatus showed 0 data keys under it",
    )
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
            if not any(k["id"] == opts.remove_key for k in document["keys"]):
                print(f"key {opts.remove_key!r} is not in {opts.path}", file=sys.stderr)
                return 1
            refusal = _may_remove(opts.remove_key, opts.database_url, opts.force_unchecked)
            if refusal is not None:
                print(refusal, file=sys.stderr)
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

"""Rules for secret keys, values and the ids that name tenants (SPEC 2.1)."""

from __future__ import annotations

import re
from typing import Final

from service.domain.errors import FieldViolation, InvalidArgument

MAX_KEY_LENGTH: Final = 256
# 64 KiB of UTF-8: large enough for a PEM bundle or a service-account JSON, small enough that a
# resolve of many references stays within the default 4 MiB gRPC message size.
MAX_VALUE_BYTES: Final = 64 * 1024
# Ids come from the platform (workspace, user, workflow, execution); they are opaque, but bounded
# so that a bad caller cannot make us store or log megabytes per row.
MAX_ID_LENGTH: Final = 200
MAX_EMAIL_LENGTH: Final = 320
MAX_DISPLAY_NAME_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 2000

KEY_PATTERN: Final = r"[A-Za-z0-9_]{1,256}"
_KEY_RE: Final = re.compile(KEY_PATTERN)


def key_problem(key: str) -> str | None:
    """Why `key` is not a valid secret key, or None when it is."""
    if not key:
        return "key is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"key is longer than {MAX_KEY_LENGTH} characters"
    if not _KEY_RE.fullmatch(key):
        return "key may only contain letters A-Z and a-z, digits 0-9 and underscore (_)"
    return None


def is_valid_key(key: str) -> bool:
    return key_problem(key) is None


def value_problem(value: str) -> str | None:
    """Why `value` cannot be stored, or None when it can. Never quotes the value."""
    if value == "":
        return "value is empty"
    if "\x00" in value:
        # Postgres text and most consumers (headers, env vars) cannot carry NUL.
        return "value contains a NUL character"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "value is not valid UTF-8"
    if size > MAX_VALUE_BYTES:
        return f"value is {size} bytes; the limit is {MAX_VALUE_BYTES} bytes (64 KiB)"
    return None


def id_problem(what: str, value: str) -> str | None:
    """Why an opaque id (workspace_id, user_id, ...) is unusable, or None."""
    if not value:
        return f"{what} is required"
    if len(value) > MAX_ID_LENGTH:
        return f"{what} is longer than {MAX_ID_LENGTH} characters"
    if "\x00" in value or not value.isprintable():
        return f"{what} contains control characters"
    return None


def require_id(what: str, value: str) -> None:
    """Raises InvalidArgument (with a field violation) when an opaque id is unusable."""
    problem = id_problem(what, value)
    if problem:
        raise InvalidArgument(problem, [FieldViolation(what, problem)])


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_problem(email: str) -> str | None:
    if not email:
        return "email is required"
    if len(email) > MAX_EMAIL_LENGTH:
        return f"email is longer than {MAX_EMAIL_LENGTH} characters"
    local, at, domain = email.partition("@")
    if not at or not local or not domain or any(c.isspace() for c in email):
        return "email is not an email address"
    return None

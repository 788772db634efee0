"""Rules for secret keys, values and the ids that name tenants (SPEC 2.1)."""

from __future__ import annotations

import re
from typing import Final

from service.domain.errors import FieldViolation, InvalidArgument
from service.domain.limits import (
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    MAX_VALUE_BYTES,
)

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


def _has_control(value: str) -> bool:
    # NUL breaks Postgres text and COPY; other control characters (newlines, escapes, DEL, C1)
    # forge log lines and audit rows. isprintable() is false for all of them (and for the Unicode
    # line and paragraph separators), and true for ordinary non-ASCII text.
    return not value.isprintable()


def id_problem(what: str, value: str, *, required: bool = True, max_length: int = MAX_ID_LENGTH) -> str | None:
    """Why a caller-supplied identifier is unusable, or None: the one rule (SPEC 2.1) for
    workspace, user, workflow and execution ids, page tokens and the like."""
    if not value:
        return f"{what} is required" if required else None
    if len(value) > max_length:
        return f"{what} is longer than {max_length} characters"
    if _has_control(value):
        return f"{what} contains NUL or other control characters"
    return None


def require_id(what: str, value: str, *, required: bool = True, max_length: int = MAX_ID_LENGTH) -> None:
    """Raises InvalidArgument (with a field violation naming `what`) when an identifier is unusable."""
    problem = id_problem(what, value, required=required, max_length=max_length)
    if problem:
        raise InvalidArgument(problem, [FieldViolation(what, problem)])


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_problem(email: str, what: str = "email") -> str | None:
    problem = id_problem(what, email, max_length=MAX_EMAIL_LENGTH)
    if problem:
        return problem
    local, at, domain = email.partition("@")
    if not at or not local or not domain or any(c.isspace() for c in email):
        return f"{what} is not an email address"
    return None


def require_email(email: str, what: str = "email") -> str:
    """The normalized email, or InvalidArgument naming the field."""
    normalized = normalize_email(email)
    problem = email_problem(normalized, what)
    if problem:
        raise InvalidArgument(problem, [FieldViolation(what, problem)])
    return normalized

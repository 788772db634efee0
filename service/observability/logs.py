"""Log lines (SECRETS_LOG_FORMAT): `text` (the default, one line per record) or `json` (one JSON
object per line), and the access line that every call writes (service/observability/calls.py).

An access line names the method, the principal, the user it acts for, the workspace the request
names, the status code, the duration and a request id. Never a value: requests are not logged,
only these fields, and every field a caller chose is bounded and escaped, so that a hostile id can
neither forge a line nor make one huge.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
ACCESS_LOGGER = "service.access"

# The longest caller-chosen text an access line keeps (ids are at most 256 characters anyway).
MAX_FIELD = 256
# What a text line shows as it is; anything else is shown JSON-quoted (escaped), so that a newline
# or a space in a workspace id cannot make one line look like two or shift the fields.
_PLAIN = re.compile(r"[\w.@:/+*=-]{1,256}", re.ASCII)


def _plain(text: str) -> str:
    if not text:
        return "-"
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text[:MAX_FIELD])


class AccessLine:
    """One call's access line. Rendered only when a handler formats it: as text by `str()`, or
    as fields by JsonFormatter."""

    __slots__ = ("code", "method", "ms", "principal", "request_id", "user", "workspace")

    def __init__(
        self, method: str, code: str, ms: float, principal: str, user: str, workspace: str, request_id: str
    ) -> None:
        self.method = method
        self.code = code
        self.ms = ms
        self.principal = principal
        self.user = user
        self.workspace = workspace
        self.request_id = request_id

    def fields(self) -> dict[str, object]:
        return {
            "method": self.method[:MAX_FIELD],
            "code": self.code,
            "duration_ms": round(self.ms, 3),
            "principal": self.principal[:MAX_FIELD],
            "user": self.user[:MAX_FIELD],
            "workspace": self.workspace[:MAX_FIELD],
            "request_id": self.request_id,
        }

    def __str__(self) -> str:
        return (
            f"{_plain(self.method)} {self.code} {self.ms:.2f} ms principal={_plain(self.principal)} "
            f"user={_plain(self.user)} workspace={_plain(self.workspace)} request_id={self.request_id}"
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601), level, logger, pid, message;
    an access line's fields instead of its message; an exception's type and stack as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
        }
        if isinstance(record.msg, AccessLine):
            doc["message"] = "rpc"
            doc.update(record.msg.fields())
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: control characters and line separators are escaped, so one record is
        # always exactly one line.
        return json.dumps(doc, default=str)


def log_handler(log_format: str) -> logging.Handler:
    """The handler every record goes through: stderr, in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler

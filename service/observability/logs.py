"""Log lines (SECRETS_LOG_FORMAT): `text` (the default, one line per record) or `json` (one JSON
object per line), and the access line that every call writes (service/observability/calls.py).

An access line names the method, the principal, the user it acts for, the workspace the request
names, the status code, the duration and a request id. Never a value: requests are not logged,
only these fields, and every field a caller chose is bounded and escaped, so that a hostile id can
neither forge a line nor make one huge.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
import weakref
from collections.abc import Callable
from typing import TextIO

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


_START_NS = time.time_ns()


class AccessRecord(logging.LogRecord):
    """The log record of an access line, made with what formatters and handlers read and nothing
    else: logging's own record looks up the caller's file, thread and process names, a third of
    an access line's cost, for fields no format here shows."""

    def __init__(self, name: str, level: int, line: AccessLine) -> None:
        now = time.time_ns()
        self.name = name
        self.msg = line
        self.args = ()
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        self.pathname = self.filename = __file__
        self.module = "logs"
        self.lineno = 0
        self.funcName = ""
        self.exc_info = None
        self.exc_text = None
        self.stack_info = None
        self.created = now / 1e9
        self.msecs = (now % 1_000_000_000) // 1_000_000
        self.relativeCreated = (now - _START_NS) / 1e6
        self.thread = None
        self.threadName = None
        self.processName = None
        self.process = os.getpid()
        self.taskName = None


class _SecondCache:
    """The text of the current second, made once a second rather than once a record."""

    __slots__ = ("_convert", "_format", "_second", "_text")

    def __init__(self, fmt: str, convert: Callable[[float | None], time.struct_time]) -> None:
        self._format = fmt
        self._convert = convert
        self._second = -1
        self._text = ""

    def text(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._format, self._convert(second))
            self._second = second
        return self._text


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with the time's text made once a second (the same text as logging's own)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._seconds = _SecondCache(self.default_time_format, self.converter)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._seconds.text(record.created)},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (UTC, ISO 8601), level, logger, pid, message;
    an access line's fields instead of its message; an exception's type and stack as `exception`."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _SecondCache("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": f"{self._seconds.text(record.created)}.{int(record.msecs):03d}Z",
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


class _BufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes records to a buffered stream. Every record but an INFO access line is flushed at
    once; access lines at most FLUSH_EVERY seconds later, or when `flush_logs()` is called (the
    server calls it every second, so a quiet server's last lines are not held back). A system
    call per access line cost more than the rest of the line; what a crash can lose is the
    access lines of its last FLUSH_EVERY seconds."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._flushed = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            now = time.monotonic()
            batched = record.levelno < logging.WARNING and isinstance(record.msg, AccessLine)
            if not batched or now - self._flushed >= FLUSH_EVERY:
                self._flushed = now
                self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


FLUSH_EVERY = 0.2
_handlers: weakref.WeakSet[logging.Handler] = weakref.WeakSet()


def flush_logs() -> None:
    for handler in list(_handlers):
        with contextlib.suppress(ValueError, OSError):  # a stream closed meanwhile
            handler.flush()


def log_handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """The handler every record goes through: stderr (or `stream`), in the chosen format, buffered."""
    if stream is None:
        # stderr is line-buffered: a write per line would be a system call per line.
        stream = open(  # noqa: SIM115 (lives as long as the process)
            sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8", errors="backslashreplace", closefd=False
        )
    handler = _BufferedHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    _handlers.add(handler)
    # Nothing formats a thread's or a multiprocessing process's name; not looking them up saves
    # a few lookups per record.
    logging.logThreads = False
    logging.logMultiprocessing = False
    return handler

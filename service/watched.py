"""A configuration file the server re-reads when it changes (the keyring, the principals).

Operators edit these files in place to add a master key or to issue and revoke tokens; every
replica picks the change up without a restart. A file that no longer loads is logged and the
last good content kept: a bad edit must not take the service down.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class WatchedFile(Generic[T]):
    def __init__(
        self,
        what: str,
        path: Path | None,
        current: T,
        load: Callable[[Path], T],
        errors: tuple[type[Exception], ...],
        interval: float = 0.0,
    ) -> None:
        """`load` reads the file, raising one of `errors` when it cannot be used. The file is
        looked at no more often than every `interval` seconds (0: on every `current()`)."""
        self._what = what
        self._path = path
        self._value = current
        self._load = load
        self._errors = errors
        self._interval = interval
        self._checked = time.monotonic()
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int] | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> T:
        if self._path is None:
            return self._value
        if self._interval:
            now = time.monotonic()
            if now - self._checked < self._interval:
                return self._value
            self._checked = now
        stamp = self._file_stamp()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self._value = self._load(self._path)
            except self._errors as exc:
                log.error("%s file changed but cannot be used (%s); keeping the previous one", self._what, exc)
            else:
                log.info("%s reloaded from %s", self._what, self._path)
        return self._value

"""A configuration file the server re-reads when it changes (the keyring, the principals).

Operators edit these files in place to add a master key or to issue and revoke tokens; every
replica picks the change up without a restart.

What happens when a changed file cannot be used is the caller's choice, and it is not the same
for every file:

- without `on_error` the previous value is kept (logged at ERROR): right for the keyring, where a
  bad edit must not make every stored value unreadable;
- with `on_error` the previous value is dropped and `on_error(exc)` used instead (logged at
  ERROR): right for the principals, where keeping the previous file would keep revoked tokens
  working (SPEC 4.3: the file fails closed).

"Changed" includes a file that disappeared or can no longer be read: a deleted principals file
is a revocation, not "nothing new".
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

# What identifies one version of the file: inode (an editor that writes a new file and renames
# it over the old one), size and modification time, and change time (a chmod that makes it
# unreadable). None: the file is not there, or cannot be looked at.
_Stamp = tuple[int, int, int, int] | None


class WatchedFile(Generic[T]):
    def __init__(
        self,
        what: str,
        path: Path | None,
        current: T,
        load: Callable[[Path], T],
        errors: tuple[type[Exception], ...],
        interval: float = 0.0,
        *,
        on_error: Callable[[Exception], T] | None = None,
        accept: Callable[[T], None] | None = None,
    ) -> None:
        """`current` is the value already loaded from `path` (None: nothing to watch). `load`
        reads the file, raising one of `errors` when it cannot be used; `accept`, if given, may
        refuse a value that loaded, by raising one of `errors`. The file is looked at no more
        often than every `interval` seconds (0: on every `current()`)."""
        self._what = what
        self._path = path
        self._value = current
        self._load = load
        # OSError too: a file that is gone or unreadable, if `load` lets that through as it is.
        self._errors: tuple[type[Exception], ...] = (*errors, OSError)
        self._interval = interval
        self._on_error = on_error
        self._accept = accept
        self._checked = time.monotonic()
        self._stamp = self._file_stamp()
        self.reloads_ok = 0
        self.reloads_refused = 0

    def _file_stamp(self) -> _Stamp:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)

    def current(self) -> T:
        if self._path is None:
            return self._value
        if self._interval:
            now = time.monotonic()
            if now - self._checked < self._interval:
                return self._value
            self._checked = now
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            self._reload(self._path)
        return self._value

    def reread(self) -> None:
        """Makes the next `current()` read and check the file again, changed or not (for a
        refusal whose reason may have gone away, such as a stale count of data keys)."""
        self._stamp = None
        self._checked = 0.0

    def _reload(self, path: Path) -> None:
        try:
            value = self._load(path)
            if self._accept is not None:
                self._accept(value)
        except self._errors as exc:
            self.reloads_refused += 1
            if self._on_error is None:
                log.error("%s file %s refused (%s); keeping the previous one", self._what, path, exc)
            else:
                self._value = self._on_error(exc)
                log.error("%s file %s refused (%s); the previous one is dropped, not kept", self._what, path, exc)
            return
        self._value = value
        self.reloads_ok += 1
        log.info("%s reloaded from %s", self._what, path)

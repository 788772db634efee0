"""One snapshot per run (issue 14, part 3): every resolve of one execution sees the same versions.

The first resolve of an execution pins, for each key it resolves, the (scope, secret id, version)
it chose; later resolves of the execution (same workspace and run user) use the pinned version of
each pinned key, opened from `secret_versions`, even if the secret changed in between. A pinned
secret that was deleted (or renamed, or replaced by another of the same key) fails its block
SECRET_NOT_FOUND; one the run user may no longer use fails as the newest would; a pinned version
no longer kept (past the last 10) fails SECRET_NOT_FOUND saying so. Keys first seen later are
pinned then. A request with `latest_values` resolves the newest values and pins nothing.

Pins hold ids and versions, never a value or sealed bytes. Postgres (table run_pins) is the
shared record: a pin is written with an insert that keeps any pin already there (one round trip,
which also returns it), so two replicas pinning the same key at once agree on one. Each replica
keeps the pins it has written or read in a bounded map (`RunPins`), so the resolves of a run
after its first one on a replica need no database round trip while every key is pinned and its
pin is the newest version (the resolve cache's plan then has everything). A key a replica has no
pin for locally always goes to the database (which answers with another replica's pin if there
is one), so a replica never pins a second version of a key.

Pins end with the run: EndRun deletes them and notifies `p:["<workspace>","<execution>"]`, on
which every replica drops its map entries for the run (the replica that ended it at once). They
expire 24 h after they were made: ignored from then (and replaced by the next resolve), and
deleted 1,000 at a time now and then (one resolve in a hundred that writes pins).

The local map is used only while the change listener is connected and it was emptied when it
connected (a missed EndRun notification can leave nothing behind); otherwise every resolve of
an execution reads its pins from the database (one round trip). Window: an EndRun on another
replica takes effect here when its notification arrives (sub-millisecond on one host); a resolve
of the ended execution in that moment may still use its old pins (with a run grant, the grant is
refused after EndRun anyway).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, NamedTuple

__all__ = ["Pin", "RunPins", "pins_tag"]
PINS_TAG_PREFIX: Final = "p:"
# The local map holds at most this many runs, this many pins in all, and about this many bytes:
# the ids and keys in it are the executors' to choose (up to 256 characters each), so a count
# alone could let 100,000 pins of the longest keys take over 100 MiB.
MAX_RUNS: Final = 8192
MAX_PINS: Final = 100_000
MAX_BYTES: Final = 16 * 1024 * 1024
# What a pin, a run user's map and a run cost besides their strings (dict slots, tuples, ints),
# and the strings at 4 bytes a character, the worst Python stores: an upper bound, not a census.
_PIN_BYTES: Final = 200
_ENTRY_BYTES: Final = 400


def _text_bytes(*texts: str) -> int:
    return 4 * sum(map(len, texts))


def pins_tag(workspace_id: str, execution_id: str) -> str:
    return PINS_TAG_PREFIX + json.dumps([workspace_id, execution_id])


class Pin(NamedTuple):
    scope: int
    secret_id: int
    version: int
    expires_at: float  # Unix time


RunKey = tuple[str, str]  # workspace, execution


class RunPins:
    """This replica's map of run pins (see the module docstring); follows the change notifications
    of service/store/notify.py `Invalidations` to drop the pins of ended runs."""

    def __init__(self, max_runs: int = MAX_RUNS, max_pins: int = MAX_PINS, max_bytes: int = MAX_BYTES) -> None:
        self.max_runs = max_runs
        self.max_pins = max_pins
        self.max_bytes = max_bytes
        # (workspace, execution) -> run user -> key -> pin
        self._runs: OrderedDict[RunKey, dict[str, dict[str, Pin]]] = OrderedDict()
        # (pins, bytes) held per run, so that dropping a run gives both back exactly.
        self._held: dict[RunKey, tuple[int, int]] = {}
        self._count = 0
        self.bytes = 0
        # True while the listener is connected (and the map was emptied when it connected).
        self.ready = False
        # Bumped whenever pins are dropped: a database read that began before must not be kept.
        self.epoch = 0

    # -- followed notifications (called by Invalidations) --

    def listening(self) -> None:
        self.clear()
        self.ready = True

    def lost(self) -> None:
        self.ready = False
        self.clear()

    def changed(self, tags: Iterable[str]) -> None:
        for tag in tags:
            if tag.startswith(PINS_TAG_PREFIX):
                try:
                    workspace_id, execution_id = json.loads(tag[len(PINS_TAG_PREFIX) :])
                except (ValueError, TypeError):
                    self.clear()
                    continue
                self.drop_run(str(workspace_id), str(execution_id))

    # -- the map --

    def get(self, workspace_id: str, execution_id: str, run_user_id: str) -> dict[str, Pin] | None:
        if not self.ready:
            return None
        users = self._runs.get((workspace_id, execution_id))
        if users is None:
            return None
        self._runs.move_to_end((workspace_id, execution_id))
        return users.get(run_user_id)

    def put(
        self, workspace_id: str, execution_id: str, run_user_id: str, pins: Iterable[tuple[str, Pin]], read_epoch: int
    ) -> None:
        if not self.ready or read_epoch != self.epoch:
            return
        run = (workspace_id, execution_id)
        users = self._runs.get(run)
        added_bytes = 0
        if users is None:
            users = self._runs[run] = {}
            added_bytes += _ENTRY_BYTES + _text_bytes(workspace_id, execution_id)
        else:
            self._runs.move_to_end(run)
        held = users.get(run_user_id)
        if held is None:
            held = users[run_user_id] = {}
            added_bytes += _ENTRY_BYTES + _text_bytes(run_user_id)
        added = 0
        for key, pin in pins:
            if key not in held:
                added += 1
                added_bytes += _PIN_BYTES + _text_bytes(key)
            held[key] = pin
        count, size = self._held.get(run, (0, 0))
        self._held[run] = (count + added, size + added_bytes)
        self._count += added
        self.bytes += added_bytes
        while self._runs and (
            len(self._runs) > self.max_runs or self._count > self.max_pins or self.bytes > self.max_bytes
        ):
            oldest, _ = self._runs.popitem(last=False)
            self._forget(oldest)

    def _forget(self, run: RunKey) -> None:
        count, size = self._held.pop(run, (0, 0))
        self._count -= count
        self.bytes -= size

    def drop_run(self, workspace_id: str, execution_id: str) -> None:
        self.epoch += 1
        if self._runs.pop((workspace_id, execution_id), None) is not None:
            self._forget((workspace_id, execution_id))

    def clear(self) -> None:
        self.epoch += 1
        self._runs.clear()
        self._held.clear()
        self._count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self._count

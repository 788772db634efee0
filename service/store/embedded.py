"""The embedded Postgres for development and tests: a real Postgres 16 from the pgserver wheel,
started in the data directory.

Only `make run`, the workers and the tests use it, when no database URL is configured; it never
connects, migrates or pools (that is `pool.py` and `migrations.py`), and production never
imports pgserver.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


class EmbeddedPostgres:
    """A real Postgres 16 (from the pgserver wheel) in the data dir, for development and tests.

    Its data survives restarts: the directory is initialised once and reused.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def start(self) -> str:
        import pgserver

        # pgserver logs every command it runs at INFO; its start-up story is not ours to tell.
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        get_server = pgserver.get_server  # type: ignore[attr-defined]
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

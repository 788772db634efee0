"""`python -m service` (also the `secrets-server` command): serve until SIGTERM.

Exit codes: 0 after SIGTERM (or SIGINT) once calls in flight are drained; 2 when the server
cannot start, with one line on stderr saying why (SPEC 4.1), whatever the cause: configuration,
a keyring or principals file, the database, the port, a missing embedded Postgres.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any

from service.config import ConfigError, Settings, StartupError, startup_problem


def run_loop(main_coro: Coroutine[Any, Any, None]) -> None:
    """Runs on uvloop where it is installed (faster I/O), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


def _worker(settings: Settings, worker: int) -> None:
    from service.server import serve

    try:
        run_loop(serve(settings, reuse_port=True, show_banner=False, worker=worker))
    except StartupError as exc:
        # One line, as for a single process; the parent sees the exit code and stops the rest.
        _refuse(f"worker {worker}: {exc}")
        os._exit(2)


def _refuse(problem: str) -> int:
    print(f"secrets-server: {problem}", file=sys.stderr, flush=True)
    return 2


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return _refuse(startup_problem(exc))
    from service.server import configure_logging, serve

    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        from service.workers import run_workers

        try:
            return run_workers(settings, _worker)
        except Exception as exc:
            # Everything before the workers are forked (keys, embedded Postgres, migrations).
            return _refuse(startup_problem(exc))
    try:
        run_loop(serve(settings))
    except StartupError as exc:  # serve() gives every start-up failure as one
        return _refuse(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

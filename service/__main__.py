"""`python -m service` (also the `secrets-server` command): serve until SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from service.config import ConfigError, Settings


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

    run_loop(serve(settings, reuse_port=True, show_banner=False, worker=worker))


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"secrets-server: {exc}", file=sys.stderr)
        return 2
    from service.server import configure_logging, serve

    configure_logging(settings.log_level)
    try:
        if settings.workers > 1:
            from service.workers import run_workers

            return run_workers(settings, _worker)
        run_loop(serve(settings))
    except ConfigError as exc:
        print(f"secrets-server: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as exc:
        # Start-up failures (a bad key file, a taken port, an unreachable database) get one line.
        print(f"secrets-server: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

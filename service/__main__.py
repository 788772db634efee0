"""`python -m service` (also the `secrets-server` command): serve until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from service.config import ConfigError, Settings


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"secrets-server: {exc}", file=sys.stderr)
        return 2
    from service.server import configure_logging, serve

    configure_logging(settings.log_level)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(serve(settings))
        else:
            asyncio.run(serve(settings))
    except (OSError, ValueError, RuntimeError) as exc:
        # Start-up failures (a bad key file, a taken port, an unreachable database) get one line.
        print(f"secrets-server: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

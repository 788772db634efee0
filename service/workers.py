"""SECRETS_WORKERS=N: N server processes sharing one port (SO_REUSEPORT), as gRPC's own
multiprocessing example does. Python serves one core per process; the kernel spreads new
connections over the workers.

Everything that must exist once is done here before forking: development keys, the embedded
Postgres, migrations. The workers are forked before any gRPC object exists in this process
(gRPC's core does not survive a fork with live channels or servers), and each builds its own
server, pool and caches. The parent only forwards SIGTERM/SIGINT and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from service import devmode
from service.config import ConfigError, Settings
from service.observability.multiprocess import WorkerMetrics
from service.store.embedded import EmbeddedPostgres
from service.store.pool import Database

log = logging.getLogger("service")


async def _migrate(url: str) -> None:
    db = await Database.connect(url, min_size=1, max_size=1)
    try:
        await db.migrate()
    finally:
        await db.close()


def run_workers(settings: Settings, run_one: Callable[[Settings, int], None]) -> int:
    """Forks `settings.workers` processes that each call `run_one(settings, worker)`."""
    from service.server import load_essentials

    if settings.listen.endswith(":0"):
        raise ConfigError("SECRETS_WORKERS > 1 needs a fixed port in SECRETS_LISTEN, not port 0")
    essentials = load_essentials(settings)
    metrics = WorkerMetrics.prepare(settings)  # before forking: one /metrics, the workers' sum
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        url = embedded.start()
    asyncio.run(_migrate(url))
    child_settings = replace(essentials.settings, database_url=url)

    children: list[int] = []
    for worker in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                run_one(child_settings, worker)
                code = 0
            except BaseException:
                log.exception("worker %d failed", worker)
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    log.info("started %d workers on %s: pids %s", len(children), settings.listen, children)
    metrics.serve()
    if not settings.production:
        print(devmode.banner(settings.listen, essentials.dev_tokens, essentials.fresh_tokens), flush=True)

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    remaining = set(children)
    while remaining:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        metrics.exited(pid)
        exit_code = os.waitstatus_to_exitcode(code)
        if exit_code != 0:
            # One worker gone wrong takes the rest down: a supervisor restarts the whole set,
            # rather than the port silently serving with less capacity.
            log.error("worker pid %d exited with %d; stopping the others", pid, exit_code)
            # A worker that could not start (exit 2, its one line already printed) makes the
            # whole server a start-up failure too; anything else is a failure while serving.
            status = max(status, 2 if exit_code == 2 else 1)
            forward(signal.SIGTERM, None)
    metrics.close()
    if embedded is not None:
        embedded.stop()
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use python -m service with SECRETS_WORKERS")

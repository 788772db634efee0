"""Metrics of SECRETS_WORKERS > 1: one /metrics for all the workers, served by the parent.

prometheus_client's multiprocess mode: before forking, the parent points PROMETHEUS_MULTIPROC_DIR
at an empty directory; every worker's metrics then live in files there (one per process and
kind), and the parent's collector adds them up at each scrape. Counters and histograms are summed
over every worker that ever ran; gauges as each one says (metrics.py). A worker that exits is
marked dead, so that its live gauges stop counting.

The parent imports prometheus_client only once the directory is set: the library chooses its
storage at import.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from service.config import Settings, StartupError

log = logging.getLogger("service")

ENV = "PROMETHEUS_MULTIPROC_DIR"


def check_metrics_address(listen: str) -> None:
    """Refuses, in one line, a metrics address that cannot be listened on, before anything starts."""
    host, _, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        found = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = found[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except (OSError, UnicodeError, ValueError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise StartupError(f"cannot serve metrics on {listen} (SECRETS_METRICS_LISTEN): {problem.lower()}") from None


class WorkerMetrics:
    """The parent's side; does nothing when SECRETS_METRICS_LISTEN is unset."""

    def __init__(self, listen: str | None, directory: Path | None, made: bool) -> None:
        self._listen = listen
        self._directory = directory
        self._made = made
        self._server: Any = None

    @classmethod
    def prepare(cls, settings: Settings) -> WorkerMetrics:
        """Before forking: sets up the directory the workers write their metrics to."""
        if not settings.metrics_listen:
            return cls(None, None, False)
        check_metrics_address(settings.metrics_listen)
        given = os.environ.get(ENV, "").strip()
        if given:
            # An operator's own directory: emptied of the last run's files, which would count twice.
            directory = Path(given)
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob("*.db"):
                stale.unlink()
            made = False
        else:
            directory = Path(tempfile.mkdtemp(prefix="secrets-metrics-"))
            made = True
        os.environ[ENV] = str(directory)
        if "prometheus_client" in sys.modules:
            # Imported before the directory was set: switch it to multiprocess storage now, before
            # any worker creates a metric.
            from prometheus_client import values

            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        return cls(settings.metrics_listen, directory, made)

    def serve(self) -> None:
        """After forking: serves the sum of the workers' metrics."""
        if self._listen is None:
            return
        from prometheus_client import CollectorRegistry, multiprocess

        from service.observability.metrics import serve

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        try:
            self._server = serve(self._listen, registry)
        except OSError as exc:
            # Free when checked before forking; the workers serve on without a /metrics.
            log.error("cannot serve metrics on %s: %s", self._listen, exc.strerror or type(exc).__name__)
            return
        host = self._listen.rpartition(":")[0]
        log.info("serving metrics on http://%s:%d/metrics (the sum over the workers)", host, self._server.server_port)

    def exited(self, pid: int) -> None:
        if self._listen is None:
            return
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._made and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

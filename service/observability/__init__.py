"""What an operator watches: Prometheus metrics, OpenTelemetry traces and the access log
(README, "Operating it").

`Observability` is built once per server process before the server (its interceptor is the
server's first), and started once the server serves (its task samples the service's figures and,
when the task ends with the server, closes the metrics endpoint and flushes the traces).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import descriptor

from service.config import Settings, StartupError
from service.observability import tracing
from service.observability.calls import CallObserver
from service.observability.logs import flush_logs

SAMPLE_INTERVAL = 1.0  # seconds

log = logging.getLogger("service")


class Observability:
    def __init__(
        self,
        settings: Settings,
        services: Iterable[descriptor.ServiceDescriptor],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing.from_env(os.environ if environ is None else environ)
        self._registry: Any = None
        self._service_metrics: Any = None
        self._http: Any = None
        rpc_metrics: Any = None
        # With workers, the parent serves the sum of theirs (multiprocess.py); each worker only counts.
        self._serves_metrics = bool(settings.metrics_listen) and settings.workers == 1
        if settings.metrics_listen:
            from service.observability import metrics
            from service.observability.multiprocess import check_metrics_address

            if self._serves_metrics:
                check_metrics_address(settings.metrics_listen)
            self._registry = metrics.new_registry(process=self._serves_metrics)
            rpc_metrics = metrics.RpcMetrics(self._registry)
            self._service_metrics = metrics.ServiceMetrics(self._registry)
        self.interceptor = CallObserver(services, rpc_metrics, self.tracing)

    @property
    def metrics_port(self) -> int | None:
        return int(self._http.server_port) if self._http is not None else None

    def start(
        self, *, cache: Any, listening: bool, audit: Any, db: Any, principals: Any, keyring: Any
    ) -> asyncio.Task[None]:
        """Starts serving /metrics and sampling; the task's end (Running.stop cancels it) undoes both."""
        if self.tracing is not None:
            self.tracing.instrument()
        if self._serves_metrics and self.settings.metrics_listen:
            from service.observability import metrics

            try:
                self._http = metrics.serve(self.settings.metrics_listen, self._registry)
            except OSError as exc:
                raise StartupError(
                    f"cannot serve metrics on {self.settings.metrics_listen} (SECRETS_METRICS_LISTEN): "
                    f"{(exc.strerror or type(exc).__name__).lower()}"
                ) from None
            host = self.settings.metrics_listen.rpartition(":")[0]
            log.info("serving metrics on http://%s:%d/metrics", host, self.metrics_port)
        sources: Any = None
        if self._service_metrics is not None:
            from service.observability.metrics import Sources

            sources = Sources(cache, listening, audit, db, principals, keyring)
        return asyncio.create_task(self._run(sources), name="observability")

    async def _run(self, sources: Any) -> None:
        """Every second until the server stops: the buffered log lines out, the service's
        figures sampled."""
        try:
            while True:
                flush_logs()
                if self._service_metrics is not None:
                    await self._service_metrics.tick(sources)
                await asyncio.sleep(SAMPLE_INTERVAL)
        finally:
            await self.close()

    async def close(self) -> None:
        flush_logs()
        if self._http is not None:
            http, self._http = self._http, None
            await asyncio.to_thread(http.shutdown)
            http.server_close()
        if self.tracing is not None:
            await self.tracing.close()

"""Prometheus metrics (SECRETS_METRICS_LISTEN, `prometheus-client`).

RPC metrics are counted by the call observer as calls end (calls.py). The service's own figures
are sampled from the objects that already keep them (the resolve cache's hits and misses, the
audit buffer's counters, the pool's sizes, the watched files' reload counts) once a second, and
the data keys per master key from the database once a minute: nothing on a call's path.

With SECRETS_WORKERS above 1 every worker writes its figures to the multiprocess directory the
parent set up (service/observability/multiprocess.py) and the parent serves their sum; gauges of
the process (pending audit events, pool connections) are summed over the live workers, gauges of
the database or the configuration files, the same in every worker, show the largest reading.

No label carries a value, a token, or text a caller chose: methods are those of the registered
services (anything else is `unknown`), codes are gRPC's, master key ids come from the keyring file.

prometheus_client is imported here only, and this module only when metrics are on: it decides at
import whether it runs in multiprocess mode.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

log = logging.getLogger(__name__)

# Seconds. A small resolve takes about 0.1 ms and a large import a few seconds.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DATA_KEYS_INTERVAL = 60.0
RPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

# The `_created` series double what a scrape carries and nobody charts them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class MethodMetrics:
    """One method's labelled children, looked up once rather than on every call."""

    __slots__ = ("_by_code", "_handled", "_labels", "seconds", "started")

    def __init__(self, rpc: RpcMetrics, labels: tuple[str, str, str]) -> None:
        self._labels = labels
        self._handled = rpc.handled
        self._by_code: dict[str, Any] = {}
        self.started = rpc.started.labels(*labels)
        self.seconds = rpc.seconds.labels(*labels)

    def handled(self, code: str) -> Any:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._handled.labels(*self._labels, code)
        return child


class RpcMetrics:
    """The metrics platform teams chart for any gRPC server (go-grpc-prometheus' names)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter("grpc_server_started", "RPCs started on the server.", RPC_LABELS, registry=registry)
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status code.",
            (*RPC_LABELS, "grpc_code"),
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from taking an RPC to its status, in seconds.",
            RPC_LABELS,
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.data_loss = Counter(
            "secrets_data_loss",
            "Calls answered DATA_LOSS: a sealed value or wrapped key failed authentication.",
            registry=registry,
        )

    def method(self, kind: str, service: str, name: str) -> MethodMetrics:
        return MethodMetrics(self, (kind, service, name))


@dataclass
class Sources:
    """What the service metrics are read from (all of it kept by its own module already)."""

    cache: Any  # service.app.cache.ResolveCache
    listening: bool  # whether the change listener runs at all (SECRETS_RESOLVE_CACHE_ENTRIES > 0)
    audit: Any  # service.app.audit.AuditBuffer
    db: Any  # service.store.pool.Database
    principals: Any  # WatchedFile[Principals]
    keyring: Any  # WatchedFile[Keyring]


class _Sampled:
    """A counter fed from a running total kept elsewhere: adds what the total grew by."""

    __slots__ = ("_counter", "_last")

    def __init__(self, counter: Any) -> None:
        self._counter = counter
        self._last = 0

    def update(self, total: int) -> None:
        if total > self._last:
            self._counter.inc(total - self._last)
        self._last = total


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, labels: tuple[str, ...] = (), mode: str = "livesum") -> Gauge:
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode=mode)  # type: ignore[arg-type]

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.processes = gauge("secrets_server_processes", "Server processes serving (workers).")
        self.cache_entries = gauge("secrets_resolve_cache_entries", "Entries in the resolve cache.")
        hits = counter("secrets_resolve_cache_hits", "Resolves served from the resolve cache.")
        misses = counter("secrets_resolve_cache_misses", "Resolves that read the database (cache on, entry absent).")
        self.listener_up = gauge(
            "secrets_invalidation_listener_up",
            "Processes whose change listener is connected (the resolve cache is off while it is not).",
        )
        self.audit_pending = gauge("secrets_audit_events_pending", "Resolve audit events buffered, not yet written.")
        written = counter("secrets_audit_events_written", "Resolve audit events written to the database.")
        dropped = counter("secrets_audit_events_dropped", "Resolve audit events lost (buffer full, or refused rows).")
        self.pool = gauge("secrets_db_pool_connections", "Database connections open in the pool.", ("state",))
        self.pool_max = gauge("secrets_db_pool_max_connections", "Most connections the pool may open.")
        self.pool_waiting = gauge("secrets_db_pool_waiting", "Calls waiting for a pool connection (sampled).")
        self.data_keys = gauge(
            "secrets_data_keys",
            "Data keys wrapped under each master key id, in the database.",
            ("master_key_id",),
            mode="livemax",
        )
        self.principals = gauge("secrets_principals", "Principals loaded from the principals file.", mode="livemax")
        reloads = counter(
            "secrets_config_reloads",
            "Re-reads of a changed principals or keyring file, by outcome (ok, refused).",
            ("file", "outcome"),
        )
        self._counters: list[tuple[_Sampled, Callable[[Sources], int]]] = [
            (_Sampled(hits), lambda s: int(s.cache.hits)),
            (_Sampled(misses), lambda s: int(s.cache.misses)),
            (_Sampled(written), lambda s: int(getattr(s.audit, "written", 0))),
            (_Sampled(dropped), lambda s: int(s.audit.dropped)),
            (_Sampled(reloads.labels("principals", "ok")), lambda s: int(s.principals.reloads_ok)),
            (_Sampled(reloads.labels("principals", "refused")), lambda s: int(s.principals.reloads_refused)),
            (_Sampled(reloads.labels("keyring", "ok")), lambda s: int(s.keyring.reloads_ok)),
            (_Sampled(reloads.labels("keyring", "refused")), lambda s: int(s.keyring.reloads_refused)),
        ]
        self._master_key_ids: set[str] = set()
        self._next_count = 0.0
        self._counted_version: object = None

    def sample(self, s: Sources) -> None:
        """Reads the running figures of the process; never raises (a figure that cannot be read
        keeps its last value)."""
        for sampled, read in self._counters:
            try:
                sampled.update(read(s))
            except Exception as exc:  # a renamed attribute must not stop the others
                log.debug("metric not sampled: %s", type(exc).__name__)
        with contextlib.suppress(Exception):
            self.processes.set(1)
            self.cache_entries.set(len(s.cache))
            if s.listening:
                self.listener_up.set(1 if s.cache.enabled else 0)
            self.audit_pending.set(len(getattr(s.audit, "_pending", ())))
            pool = s.db.pool
            size, idle = pool.get_size(), pool.get_idle_size()
            self.pool.labels("idle").set(idle)
            self.pool.labels("in_use").set(size - idle)
            self.pool_max.set(pool.get_max_size())
            # asyncpg keeps no count of waits; its queue of free connections knows who waits.
            self.pool_waiting.set(len(getattr(getattr(pool, "_queue", None), "_getters", ())))
            self.principals.set(len(s.principals.current()))

    async def sample_data_keys(self, s: Sources) -> None:
        from service.store import repository as repo

        try:
            async with s.db.connection(timeout=2.0) as conn:
                counts = await repo.count_data_keys_by_master(conn)
        except Exception as exc:
            log.debug("data keys not counted: %s", type(exc).__name__)
            return
        for key_id in self._master_key_ids - counts.keys():
            self.data_keys.labels(key_id).set(0)
        for key_id, n in counts.items():
            self.data_keys.labels(key_id).set(n)
        self._master_key_ids |= counts.keys()

    async def tick(self, s: Sources) -> None:
        """One sampling (Observability calls it every second). Data keys are counted once a minute, and
        within a second of this process creating or rotating one (the keyring's record of key
        use changes)."""
        self.sample(s)
        now = time.monotonic()
        version = getattr(getattr(s.keyring, "use", None), "version", None)
        if now >= self._next_count or version != self._counted_version:
            self._next_count = now + DATA_KEYS_INTERVAL
            self._counted_version = version
            await self.sample_data_keys(s)


def new_registry(process: bool) -> CollectorRegistry:
    """A registry of this server's own (tests start many servers in one process). `process` adds
    the process's memory, CPU, file descriptors and garbage collections (process_*, python_*),
    which prometheus_client cannot add up over workers, so only a single process has them."""
    registry = CollectorRegistry()
    if process:
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def split_address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def serve(listen: str, registry: Any) -> Any:
    """Serves `registry` on http://listen/metrics in a thread of its own; returns the server."""
    from prometheus_client import start_http_server

    host, port = split_address(listen)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server

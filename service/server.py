"""Builds and runs the gRPC server: configuration, database, keys, servicers, health, shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import devmode
from service.api.directory import DirectoryServicer
from service.api.operations import OperationsServicer
from service.api.registry import RequestBudget, add_servicer
from service.api.resolver import ResolverServicer
from service.api.secret_store import SecretStoreServicer
from service.app.audit import AuditBuffer
from service.app.cache import Changes, Invalidations, ResolveCache
from service.app.directory import DirectoryService
from service.app.editor import EditorService
from service.app.keys import DataKeys, keyring_source, verify_keyring
from service.app.operations import OperationsService
from service.app.reseal import reseal_legacy_values
from service.app.resolver import ResolvePlan, ResolverService
from service.auth import AuthInterceptor, Principals, principals_source
from service.config import Settings
from service.crypto.keyring import Keyring
from service.domain.limits import MAX_MESSAGE_BYTES
from service.gen.secrets.v1 import (
    directory_pb2,
    operations_pb2,
    resolver_pb2,
    secret_store_pb2,
)
from service.store.db import Database, EmbeddedPostgres
from service.watched import WatchedFile

log = logging.getLogger("service")

SECRET_STORE = secret_store_pb2.DESCRIPTOR.services_by_name["SecretStore"]
RESOLVER = resolver_pb2.DESCRIPTOR.services_by_name["Resolver"]
DIRECTORY = directory_pb2.DESCRIPTOR.services_by_name["Directory"]
OPERATIONS = operations_pb2.DESCRIPTOR.services_by_name["Operations"]
SERVICE_NAMES = tuple(s.full_name for s in (SECRET_STORE, RESOLVER, DIRECTORY, OPERATIONS))
HEALTH_PROBE_INTERVAL = 1.0


@dataclass
class Running:
    """A started server and what it owns, for tests and for the main loop."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    db: Database
    embedded: EmbeddedPostgres | None
    audit: AuditBuffer
    health: health_aio.HealthServicer
    keys: DataKeys
    cache: ResolveCache[ResolvePlan]
    invalidations: Invalidations
    dev_tokens: dict[str, str] = field(default_factory=dict)
    fresh_tokens: bool = False
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def stop(self, grace: float = 10.0) -> None:
        """Stops taking calls, lets calls in flight finish (up to `grace` seconds), then closes."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                # A background task that died must not turn a clean shutdown into a failed one.
                log.error("background task %s had failed (%s)", task.get_name(), type(exc).__name__)
        await self.invalidations.stop()
        await self.audit.close()
        await self.db.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


@dataclass(frozen=True)
class Prepared:
    """What must exist once, before any worker starts: keys, principals and the database URL."""

    settings: Settings
    keyring: WatchedFile[Keyring]
    principals: WatchedFile[Principals]
    dev_tokens: dict[str, str]
    fresh_tokens: bool


def prepare(settings: Settings) -> Prepared:
    """Loads (in development mode, first generates) the keyring and principals, and returns
    settings that name the files, so that workers forked later all use the same ones."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.keyring_file is not None:
        keyring_path: Path = settings.keyring_file
        keyring = Keyring.load(keyring_path)
    else:
        keyring_path, keyring = devmode.dev_keyring(settings.data_dir)
    tokens: dict[str, str] = {}
    fresh = False
    if settings.principals_file is not None:
        principals_path: Path = settings.principals_file
        principals = Principals.load(principals_path)
    else:
        principals_path, principals, generated = devmode.dev_principals(settings.data_dir)
        fresh = generated is not None
        tokens = generated or devmode.saved_dev_tokens(settings.data_dir)
    named = replace(settings, keyring_file=keyring_path, principals_file=principals_path)
    return Prepared(
        named, keyring_source(keyring_path, keyring), principals_source(principals_path, principals), tokens, fresh
    )


async def _not_ready_because(db: Database, keys: DataKeys) -> str:
    """Why the secrets.v1 services cannot do their work right now ("" when they can)."""
    if not await db.ping(timeout=HEALTH_PROBE_INTERVAL):
        return f"the database cannot be reached ({db.ping_problem})"
    if not keys.usable():
        return "the keyring cannot open the data keys in use"
    return ""


class Readiness:
    """Health (SPEC 3.6). The overall name "" is liveness: SERVING while the process works, and
    never changed here (only a graceful shutdown takes it down). Each secrets.v1.* name is
    readiness: NOT_SERVING while the database cannot be reached or the keyring cannot open the
    data keys in use, so that health never says SERVING while values cannot be opened.

    `check` never raises: a readiness check that fails in a way nobody foresaw counts as "not
    ready" (and is logged), so the watcher outlives every error."""

    def __init__(self, db: Database, keys: DataKeys, health_servicer: health_aio.HealthServicer) -> None:
        self._db = db
        self._keys = keys
        self._health = health_servicer
        self._problem: str | None = None  # None: not checked yet

    async def check(self) -> None:
        try:
            problem = await _not_ready_because(self._db, self._keys)
        except Exception as exc:
            # Type only: the message of an exception we did not raise is not ours to log.
            problem = f"the readiness check failed ({type(exc).__name__})"
        if problem == self._problem:
            return
        try:
            status = health_pb2.HealthCheckResponse.NOT_SERVING if problem else health_pb2.HealthCheckResponse.SERVING
            for name in SERVICE_NAMES:
                await self._health.set(name, status)
        except Exception as exc:
            log.error("cannot set the health status (%s); trying again", type(exc).__name__)
            return
        if problem:
            log.error("not ready: %s", problem)
        elif self._problem is not None:
            log.info("ready again")
        self._problem = problem

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_PROBE_INTERVAL)
            await self.check()


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    key = settings.tls_key_file.read_bytes()
    cert = settings.tls_cert_file.read_bytes()
    if settings.tls_client_ca_file is not None:
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=settings.tls_client_ca_file.read_bytes(), require_client_auth=True
        )
    return grpc.ssl_server_credentials([(key, cert)])


async def start(settings: Settings, *, reuse_port: bool = False) -> Running:
    prepared = prepare(settings)
    keyring, principals = prepared.keyring, prepared.principals
    tokens, fresh = prepared.dev_tokens, prepared.fresh_tokens
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        url = await asyncio.to_thread(embedded.start)
        log.info("embedded Postgres running in %s", embedded.pgdata)
    try:
        db = await Database.connect(url)
        await db.migrate()
        await verify_keyring(db, keyring)  # SPEC 4.2: refuse a keyring that strands data keys
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise

    keys = DataKeys(db, keyring)
    try:
        await reseal_legacy_values(db, keys)
    except BaseException:
        await db.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    audit = AuditBuffer(db)
    audit.start()
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(principals)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    cache: ResolveCache[ResolvePlan] = ResolveCache(max_entries=settings.resolve_cache_entries)
    invalidations = Invalidations(url, cache)
    if settings.resolve_cache_entries > 0:
        invalidations.start()
    changes = Changes(db, cache)
    budget = RequestBudget(settings.max_request_bytes_in_flight)
    add_servicer(server, SecretStoreServicer(EditorService(db, keys, changes)), SECRET_STORE, budget)
    add_servicer(server, ResolverServicer(ResolverService(db, keys, audit, cache)), RESOLVER, budget)
    add_servicer(server, DirectoryServicer(DirectoryService(db, changes)), DIRECTORY, budget)
    add_servicer(server, OperationsServicer(OperationsService(db, keys, audit)), OPERATIONS, budget)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    credentials = _server_credentials(settings)
    if credentials is not None:
        port = server.add_secure_port(settings.listen, credentials)
    else:
        port = server.add_insecure_port(settings.listen)
    await server.start()
    running = Running(
        settings, server, port, db, embedded, audit, health_servicer, keys, cache, invalidations, tokens, fresh
    )
    readiness = Readiness(db, keys, health_servicer)
    await readiness.check()  # right from the start, not a probe interval later
    running._tasks.append(asyncio.create_task(readiness.watch(), name="health-watch"))
    return running


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    # asyncpg and grpc are quiet at INFO; at DEBUG they log protocol details, never our values,
    # because values only ever reach them sealed.
    logging.getLogger("asyncpg.pool").addFilter(_exception_type_only)


def _exception_type_only(record: logging.LogRecord) -> bool:
    """Through a database outage asyncpg's pool logs a full traceback at each attempt to restore
    its connection floor (every 1 to 60 s). The exception's type says enough, and the readiness
    log says why the database cannot be reached."""
    if record.exc_info and record.exc_info[1] is not None:
        record.msg = f"{record.getMessage()} ({type(record.exc_info[1]).__name__})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
    return True


def tune_gc() -> None:
    """Moves everything built at start-up (modules, descriptors, the pool) out of the collector's
    sight and makes young collections rarer. A resolve allocates a few hundred short-lived
    objects that reference counting frees; with the default thresholds the cycle collector ran
    every few calls and walked tens of thousands of long-lived objects each time."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def serve(settings: Settings, *, reuse_port: bool = False, show_banner: bool = True, worker: int = 0) -> None:
    running = await start(settings, reuse_port=reuse_port)
    tune_gc()
    host = settings.listen.rpartition(":")[0]
    address = f"{host}:{running.port}"
    log.info(
        "serving secrets.v1 on %s (%s, worker %d)", address, "TLS" if settings.tls_cert_file else "plaintext", worker
    )
    if show_banner and not settings.production:
        print(devmode.banner(address, running.dev_tokens, running.fresh_tokens), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining calls in flight")
    await running.stop(grace=10.0)
    log.info("stopped")

"""Builds and runs the gRPC server: configuration, database, keys, servicers, health, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
from service.app.cache import ResolveCache
from service.app.changes import Changes
from service.app.directory import DirectoryService
from service.app.editor import EditorService
from service.app.grants import GrantCodec, GrantService, StoppedGrants
from service.app.keys import DataKeys, keyring_source, verify_keyring
from service.app.operations import OperationsService
from service.app.pins import RunPins
from service.app.reseal import reseal_legacy_values
from service.app.resolver import ResolvePlan, ResolverService
from service.app.retention import AuditRetention
from service.app.runs import RunResolver
from service.app.trash import TrashService, maintain
from service.app.usage import UsageRecorder
from service.auth import AuthInterceptor, Principals, principals_source
from service.config import EMBEDDED_MISSING, Settings, StartupError, startup_problem
from service.crypto.keyring import Keyring
from service.domain.limits import MAX_MESSAGE_BYTES
from service.gen.secrets.v1 import (
    directory_pb2,
    operations_pb2,
    resolver_pb2,
    secret_store_pb2,
)
from service.observability import Observability
from service.observability.logs import log_handler
from service.store.embedded import EmbeddedPostgres
from service.store.notify import Invalidations
from service.store.pool import Database
from service.watched import WatchedFile

log = logging.getLogger("service")

SECRET_STORE = secret_store_pb2.DESCRIPTOR.services_by_name["SecretStore"]
RESOLVER = resolver_pb2.DESCRIPTOR.services_by_name["Resolver"]
DIRECTORY = directory_pb2.DESCRIPTOR.services_by_name["Directory"]
OPERATIONS = operations_pb2.DESCRIPTOR.services_by_name["Operations"]
SERVICE_NAMES = tuple(s.full_name for s in (SECRET_STORE, RESOLVER, DIRECTORY, OPERATIONS))
HEALTH_PROBE_INTERVAL = 1.0
# Calls gRPC core may hold before the server takes them (each is then served, or refused
# RESOURCE_EXHAUSTED by maximum_concurrent_rpcs); past it core cancels them. At least this many,
# or 32 times the calls in flight.
MIN_PENDING_CALLS = 20_000


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
    dev_tokens_file: Path | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # The resolver's servicer: its plans and how many resolves took the fast path (tests, metrics).
    resolver: ResolverServicer | None = None

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
class Essentials:
    """What must exist once, before any worker starts: keys, principals and the database URL."""

    settings: Settings
    keyring: WatchedFile[Keyring]
    principals: WatchedFile[Principals]
    dev_tokens: dict[str, str]  # only on the start that generated them
    fresh_tokens: bool
    dev_tokens_file: Path | None = None  # where development mode keeps its tokens


def load_essentials(settings: Settings) -> Essentials:
    """Loads (in development mode, first generates) the keyring and principals, and returns
    settings that name the files, so that workers forked later all use the same ones.

    The data dir is created only when something is generated into it (or, later, for the
    embedded Postgres): a production server writes nothing to local disk."""
    settings.check()
    if settings.database_url is None:
        # Before anything is generated: without the [embedded] extra there is nothing to serve on.
        try:
            import pgserver  # noqa: F401
        except ImportError as exc:
            raise StartupError(EMBEDDED_MISSING) from exc
    if settings.keyring_file is not None:
        keyring_path: Path = settings.keyring_file
        keyring = Keyring.load(keyring_path)
    else:
        keyring_path, keyring = devmode.dev_keyring(settings.data_dir)
    tokens: dict[str, str] = {}
    tokens_file: Path | None = None
    if settings.principals_file is not None:
        principals_path: Path = settings.principals_file
        principals = Principals.load(principals_path)
    else:
        principals_path, principals, generated = devmode.dev_principals(settings.data_dir)
        tokens = generated or {}  # printed on the start that generated them, never again
        tokens_file = devmode.tokens_file(settings.data_dir)
    named = replace(settings, keyring_file=keyring_path, principals_file=principals_path)
    return Essentials(
        named,
        keyring_source(keyring_path, keyring),
        principals_source(principals_path, principals),
        tokens,
        bool(tokens),
        tokens_file,
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

    def read(variable: str, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read {variable} {path}: {exc.strerror or type(exc).__name__}") from None

    key = read("SECRETS_TLS_KEY_FILE", settings.tls_key_file)
    cert = read("SECRETS_TLS_CERT_FILE", settings.tls_cert_file)
    ca = settings.tls_client_ca_file
    client_ca = read("SECRETS_TLS_CLIENT_CA_FILE", ca) if ca is not None else None
    if client_ca is not None:
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=True)
    return grpc.ssl_server_credentials([(key, cert)])


def _brief(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _where(url: str) -> str:
    """A database URL without its user name and password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", ["local socket"])[0]
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{host}{port}{parts.path or '/'}"


def _check_listen_address(listen: str) -> None:
    """Refuses, in one line, an address that cannot be listened on (a port already taken, a host
    that is not this machine's), before anything else starts. gRPC's own failure comes later,
    after the database, and prints lines of its own."""
    host, _, port_text = listen.rpartition(":")
    if not port_text.isdigit() or int(port_text) == 0:
        return  # port 0, or a form gRPC alone understands (unix:/path): left to gRPC
    host = host.removeprefix("[").removesuffix("]")
    try:
        found = socket.getaddrinfo(host or None, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise StartupError(f"cannot listen on {listen} (SECRETS_LISTEN): {_brief(exc)}") from None
    problems: list[str] = []
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                problems.append(exc.strerror or type(exc).__name__)
                continue
        return  # gRPC serves when it can bind at least one of the addresses
    raise StartupError(f"cannot listen on {listen} (SECRETS_LISTEN): {problems[0].lower()}")


async def start(settings: Settings, *, reuse_port: bool = False) -> Running:
    essentials = load_essentials(settings)
    keyring, principals = essentials.keyring, essentials.principals
    tokens, fresh = essentials.dev_tokens, essentials.fresh_tokens
    # Everything that can be refused without the database first: nothing to clean up yet.
    credentials = _server_credentials(settings)
    observability = Observability(settings, (SECRET_STORE, RESOLVER, DIRECTORY, OPERATIONS))
    if not reuse_port:
        _check_listen_address(settings.listen)
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        url = await asyncio.to_thread(embedded.start)
        log.info("embedded Postgres running in %s", embedded.pgdata)
    try:
        try:
            db = await Database.connect(url)
        except Exception as exc:
            raise StartupError(f"cannot connect to the database at {_where(url)}: {_brief(exc)}") from exc
        try:
            await db.migrate()
            await verify_keyring(db, keyring)  # SPEC 4.2: refuse a keyring that strands data keys
        except BaseException:
            await db.close()
            raise
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
    audit.usage = UsageRecorder(db)  # usage per (secret, workflow), from the audit batches
    audit.start()
    pending_calls = max(MIN_PENDING_CALLS, 32 * settings.max_calls_in_flight)
    server = grpc.aio.server(
        # The observer first: it sees every call, also those the authentication refuses.
        interceptors=[observability.interceptor, AuthInterceptor(principals)],
        # Past it, calls are answered RESOURCE_EXHAUSTED at once (sizing: Settings.max_calls_in_flight).
        maximum_concurrent_rpcs=settings.max_calls_in_flight,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            # gRPC core cancels calls that wait to be taken past its backlog (1,000 by default):
            # a flood of 3,000 resolves got CANCELLED, never reaching the limiter above. Sized far
            # past the calls in flight, the excess is taken and refused RESOURCE_EXHAUSTED.
            ("grpc.server.max_pending_requests", pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", pending_calls),
            # Keepalive and connection age (Settings; README, "Probes"): dead peers are noticed,
            # and long-lived channels reconnect, spreading over replicas added since.
            ("grpc.keepalive_time_ms", settings.keepalive_time_s * 1000),
            ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_s * 1000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),  # clients may ping every 10 s
            ("grpc.max_connection_age_ms", settings.max_connection_age_s * 1000 or 2**31 - 1),
            ("grpc.max_connection_age_grace_ms", settings.max_connection_age_grace_s * 1000),
        ],
    )
    cache: ResolveCache[ResolvePlan] = ResolveCache(max_entries=settings.resolve_cache_entries)
    invalidations = Invalidations(url, cache)
    stopped_grants = StoppedGrants(db)  # revoked and ended run grants, kept by the same listener
    invalidations.followers.append(stopped_grants)
    invalidations.followers.append(keys)  # data-key rotation on another replica drops the tenant's keys
    pins = RunPins()  # one snapshot per run: this replica's map of run pins (app/pins.py)
    invalidations.followers.append(pins)
    if settings.resolve_cache_entries > 0:
        invalidations.start()
    changes = Changes(db, cache)
    budget = RequestBudget(settings.max_request_bytes_in_flight)
    editor = EditorService(db, keys, changes, in_use_days=settings.in_use_days)
    trash = TrashService(db, changes, window_days=settings.trash_days)  # issue 13: deleted secrets
    add_servicer(server, SecretStoreServicer(editor, trash), SECRET_STORE, budget)
    grants = GrantService(db, GrantCodec(keyring), stopped_grants, pins)
    resolver = ResolverService(db, keys, audit, cache, pins)
    resolver_servicer = ResolverServicer(RunResolver(resolver, grants), grants)
    add_servicer(server, resolver_servicer, RESOLVER, budget)
    add_servicer(server, DirectoryServicer(DirectoryService(db, changes)), DIRECTORY, budget)
    add_servicer(server, OperationsServicer(OperationsService(db, keys, audit)), OPERATIONS, budget)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    try:
        if credentials is not None:
            port = server.add_secure_port(settings.listen, credentials)
        else:
            port = server.add_insecure_port(settings.listen)
    except Exception as exc:
        # Taken since _check_listen_address looked, or an address gRPC alone understands.
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise StartupError(f"cannot listen on {settings.listen} (SECRETS_LISTEN): {_brief(exc)}") from exc
    await server.start()
    running = Running(
        settings,
        server,
        port,
        db,
        embedded,
        audit,
        health_servicer,
        keys,
        cache,
        invalidations,
        tokens,
        fresh,
        essentials.dev_tokens_file,
        resolver=resolver_servicer,
    )
    readiness = Readiness(db, keys, health_servicer)
    await readiness.check()  # right from the start, not a probe interval later
    running._tasks.append(asyncio.create_task(readiness.watch(), name="health-watch"))
    if settings.audit_retention_days > 0:
        # Events past the retention are deleted in bounded batches, one replica at a time.
        retention = AuditRetention(url, settings.audit_retention_days)
        running._tasks.append(asyncio.create_task(retention.run(), name="audit-retention"))
    # The trash past its window is purged, and usage pruned, every 10 minutes (app/trash.py).
    running._tasks.append(asyncio.create_task(maintain(db, settings.trash_days), name="maintenance"))
    running._tasks.append(
        observability.start(
            cache=cache,
            listening=settings.resolve_cache_entries > 0,
            audit=audit,
            db=db,
            principals=principals,
            keyring=keyring,
        )
    )
    return running


def configure_logging(level: str, log_format: str = "text") -> None:
    # SECRETS_LOG_FORMAT: text lines, or one JSON object per line (service/observability/logs.py).
    logging.basicConfig(level=getattr(logging, level), handlers=[log_handler(log_format)])
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
    """Serves until SIGTERM or SIGINT. A failure to start is raised as StartupError (one line);
    once serving, a signal always ends in a clean return (exit 0)."""
    # Signals are taken from the first moment: a SIGTERM that arrives while the server is still
    # starting (a rolling deploy that changes its mind, a database that does not answer) cancels
    # the start, which undoes what it began, and the process exits 0 instead of being killed.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(start(settings, reuse_port=reuse_port), name="start")
    stopped = asyncio.create_task(stop.wait(), name="stop-signal")
    await asyncio.wait((starting, stopped), return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
        log.info("stopped before serving: a signal arrived during start-up")
        return
    stopped.cancel()
    try:
        running = starting.result()
    except Exception as exc:
        raise StartupError(startup_problem(exc)) from exc
    tune_gc()
    host = settings.listen.rpartition(":")[0]
    address = f"{host}:{running.port}"
    log.info(
        "serving secrets.v1 on %s (%s, worker %d)", address, "TLS" if settings.tls_cert_file else "plaintext", worker
    )
    if show_banner and not settings.production:
        print(devmode.banner(address, running.dev_tokens, running.fresh_tokens, running.dev_tokens_file), flush=True)
    await stop.wait()
    log.info("shutting down: draining calls in flight")
    try:
        await running.stop(grace=10.0)
    except Exception as exc:
        # The signal was honoured and calls were drained; what failed after is logged, not fatal.
        log.error("shutdown did not finish cleanly: %s", type(exc).__name__)
    log.info("stopped")

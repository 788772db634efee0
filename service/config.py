"""Configuration from the environment (SPEC 4.1). Nothing else is read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    """The configuration cannot work; the message is one line, fit to print and exit."""


class StartupError(Exception):
    """The server cannot start (a file, the database, the port); the message is one line, fit to
    print and exit 2 (SPEC 4.1: every start-up error is one line and exit 2)."""


EMBEDDED_MISSING = (
    "no SECRETS_DATABASE_URL and no embedded Postgres: set SECRETS_DATABASE_URL to a Postgres URL, "
    "or install the embedded one for development (pip install 'workflow-secrets-service[embedded]')"
)


def startup_problem(exc: BaseException) -> str:
    """One line for any exception that stopped the server from starting.

    Our own errors (configuration, keyring, principals) carry messages written to be printed; for
    anything else the type is named too. Whitespace (a Postgres DETAIL or HINT on lines of its
    own) is folded, so that it stays one line."""
    if isinstance(exc, ModuleNotFoundError) and exc.name == "pgserver":
        return EMBEDDED_MISSING
    message = " ".join(str(exc).split())
    if isinstance(exc, ConfigError | StartupError):
        return message
    if type(exc).__module__.startswith("service."):
        return f"cannot start: {message}"
    return f"cannot start: {type(exc).__name__}: {message}" if message else f"cannot start: {type(exc).__name__}"


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str | None = None
    data_dir: Path = Path(".secrets-data")
    keyring_file: Path | None = None
    principals_file: Path | None = None
    log_level: str = "INFO"
    env: str = "development"
    workers: int = 1
    # Entries of the resolve cache (service/app/cache.py); 0 turns it off.
    resolve_cache_entries: int = 10_000
    # Bytes of large requests (over 64 KiB) held decoded at once (service/api/registry.py); past
    # it a call is answered RESOURCE_EXHAUSTED instead of parsed. 64 MiB: sixteen 4 MiB imports.
    max_request_bytes_in_flight: int = 64 * 1024 * 1024
    # Calls one server process runs at once (gRPC's maximum_concurrent_rpcs); a call past it is
    # answered RESOURCE_EXHAUSTED at once, before any handler runs (SPEC 3.1: overload is never a
    # queue that ends in cancellation). Health and reflection calls count too.
    #
    # Sizing: calls in flight = arrival rate x time each spends in the server (Little's law), so
    # the limit is the throughput of one process times the longest wait you accept, which must
    # sit well below your clients' deadlines. One process resolves about 3,200 small requests/s
    # (README, make bench) and reaches that with 32 in flight; 512 is about 160 ms of queued work
    # at that rate. Lower it for short client deadlines or large requests (fewer calls/s); never
    # below what a healthy peak keeps in flight (bench: 32-64). It is per process: SECRETS_WORKERS=N
    # admits N times as many. Clients should retry RESOURCE_EXHAUSTED with backoff, ideally on
    # another replica.
    max_calls_in_flight: int = 512
    # Issue 13. The in-use guard: deleting or renaming a secret that a workflow used in the last
    # this many days is refused unless the request acknowledges it (0 turns the guard off).
    in_use_days: int = 30
    # Deleted secrets stay in the trash, sealed and restorable, this many days; then they are
    # purged for good.
    trash_days: int = 30
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Audit events older than this many days are deleted (service/app/retention.py); 0 keeps them.
    audit_retention_days: int = 400
    # host:port of Prometheus /metrics (service/observability); None: no metrics.
    metrics_listen: str | None = None
    # text: one line per record; json: one JSON object per line.
    log_format: str = "text"
    # Connections (README, "Probes"): the server pings a connection idle this long, and closes it
    # when the ping is not answered within the timeout; it asks clients to reconnect after
    # max_connection_age (0: never), so that long-lived executor channels spread over new
    # replicas, and lets their calls in flight finish for up to the grace.
    keepalive_time_s: int = 60
    keepalive_timeout_s: int = 20
    max_connection_age_s: int = 300
    max_connection_age_grace_s: int = 600

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def path(name: str) -> Path | None:
            value = get(name)
            return Path(value) if value else None

        mode = (get("SECRETS_ENV") or "development").lower()
        if mode not in ("development", "production"):
            raise ConfigError(f"SECRETS_ENV must be development or production, not {mode!r}")
        level = (get("SECRETS_LOG_LEVEL") or "INFO").upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"SECRETS_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}")

        def whole_number(name: str, default: int, minimum: int, maximum: int | None, rule: str) -> int:
            text = get(name) or str(default)
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"{name} must be a whole number, not {text!r}") from None
            if value < minimum or (maximum is not None and value > maximum):
                raise ConfigError(f"{name} must be {rule}")
            return value

        workers = whole_number("SECRETS_WORKERS", 1, 1, 256, "between 1 and 256")
        cache_entries = whole_number("SECRETS_RESOLVE_CACHE_ENTRIES", 10_000, 0, None, "0 (off) or more")
        request_budget = whole_number(
            "SECRETS_MAX_REQUEST_BYTES_IN_FLIGHT",
            cls.max_request_bytes_in_flight,
            4 * 1024 * 1024,
            None,
            "at least 4194304 (one largest request)",
        )
        max_calls = whole_number("SECRETS_MAX_CALLS_IN_FLIGHT", cls.max_calls_in_flight, 1, None, "1 or more")
        retention_days = whole_number(
            "SECRETS_AUDIT_RETENTION_DAYS",
            cls.audit_retention_days,
            0,
            100_000,
            "a number of days from 0 (keep every event) to 100000",
        )
        in_use_days = whole_number("SECRETS_IN_USE_DAYS", cls.in_use_days, 0, 365, "between 0 (off) and 365")
        trash_days = whole_number("SECRETS_TRASH_DAYS", cls.trash_days, 1, 3650, "between 1 and 3650")
        log_format = (get("SECRETS_LOG_FORMAT") or "text").lower()
        if log_format not in LOG_FORMATS:
            raise ConfigError(f"SECRETS_LOG_FORMAT must be text or json, not {log_format!r}")
        seconds = "a whole number of seconds, 1 or more"
        keepalive_time = whole_number("SECRETS_KEEPALIVE_TIME_S", cls.keepalive_time_s, 1, None, seconds)
        keepalive_timeout = whole_number("SECRETS_KEEPALIVE_TIMEOUT_S", cls.keepalive_timeout_s, 1, None, seconds)
        connection_age = whole_number(
            "SECRETS_MAX_CONNECTION_AGE_S", cls.max_connection_age_s, 0, None, "0 (no limit) or more seconds"
        )
        connection_grace = whole_number(
            "SECRETS_MAX_CONNECTION_AGE_GRACE_S", cls.max_connection_age_grace_s, 1, None, seconds
        )
        settings = cls(
            listen=get("SECRETS_LISTEN") or cls.listen,
            database_url=get("SECRETS_DATABASE_URL"),
            data_dir=path("SECRETS_DATA_DIR") or cls.data_dir,
            keyring_file=path("SECRETS_KEYRING_FILE"),
            principals_file=path("SECRETS_PRINCIPALS_FILE"),
            log_level=level,
            env=mode,
            workers=workers,
            resolve_cache_entries=cache_entries,
            max_request_bytes_in_flight=request_budget,
            max_calls_in_flight=max_calls,
            in_use_days=in_use_days,
            trash_days=trash_days,
            tls_cert_file=path("SECRETS_TLS_CERT_FILE"),
            tls_key_file=path("SECRETS_TLS_KEY_FILE"),
            tls_client_ca_file=path("SECRETS_TLS_CLIENT_CA_FILE"),
            audit_retention_days=retention_days,
            metrics_listen=get("SECRETS_METRICS_LISTEN"),
            log_format=log_format,
            keepalive_time_s=keepalive_time,
            keepalive_timeout_s=keepalive_timeout,
            max_connection_age_s=connection_age,
            max_connection_age_grace_s=connection_grace,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.production:
            missing = [
                name
                for name, value in (
                    ("SECRETS_DATABASE_URL", self.database_url),
                    ("SECRETS_KEYRING_FILE", self.keyring_file),
                    ("SECRETS_PRINCIPALS_FILE", self.principals_file),
                )
                if not value
            ]
            if missing:
                raise ConfigError(
                    f"SECRETS_ENV=production refuses to start without {', '.join(missing)} "
                    "(no embedded database or generated keys in production)"
                )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("SECRETS_TLS_CERT_FILE and SECRETS_TLS_KEY_FILE must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("SECRETS_TLS_CLIENT_CA_FILE (mutual TLS) needs SECRETS_TLS_CERT_FILE and _KEY_FILE")
        if ":" not in self.listen:
            raise ConfigError(f"SECRETS_LISTEN must be host:port, not {self.listen!r}")
        if self.metrics_listen is not None:
            port = self.metrics_listen.rpartition(":")[2]
            if not port.isdigit() or int(port) > 65535:
                raise ConfigError(f"SECRETS_METRICS_LISTEN must be host:port, not {self.metrics_listen!r}")
            if self.metrics_listen == self.listen and port != "0":
                raise ConfigError("SECRETS_METRICS_LISTEN must not be the gRPC address SECRETS_LISTEN")
        if self.database_url and self.keyring_file is None:
            # A generated keyring lives in one machine's data dir; values sealed under it in a
            # shared database would be lost with that directory (SPEC 4.1).
            raise ConfigError(
                "SECRETS_DATABASE_URL needs SECRETS_KEYRING_FILE: a generated keyring is only for the "
                "embedded database (create one with secrets-new-keyring)"
            )

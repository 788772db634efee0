"""Whether to trace: only when the standard OpenTelemetry variables ask for it.

Traces are on when OTEL_TRACES_EXPORTER names an exporter (not `none`), or when an OTLP endpoint
is set (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true
turns them off whatever else is set. Off, nothing of OpenTelemetry is imported or installed: the
call observer has no span to make and asyncpg is left as it is.

The OpenTelemetry packages are the `[otel]` extra; a server asked to trace without them refuses to
start, in one line, rather than run without the traces its operator expects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from service.config import StartupError

if TYPE_CHECKING:
    from service.observability.otel import Tracing

OTEL_MISSING = (
    "the OTEL_* settings ask for traces, but OpenTelemetry is not installed: "
    "pip install 'workflow-secrets-service[otel]', or unset them"
)

# A tracer provider that tests install instead of the one the environment describes.
_provider_for_tests: Any = None


def wanted(environ: Mapping[str, str]) -> bool:
    def get(name: str) -> str:
        return environ.get(name, "").strip().lower()

    if get("OTEL_SDK_DISABLED") == "true":
        return False
    exporter = get("OTEL_TRACES_EXPORTER")
    if exporter:
        return exporter != "none"
    return bool(get("OTEL_EXPORTER_OTLP_ENDPOINT") or get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def from_env(environ: Mapping[str, str]) -> Tracing | None:
    """The tracing of this process, or None (off)."""
    if _provider_for_tests is None and not wanted(environ):
        return None
    try:
        from service.observability import otel
    except ImportError as exc:
        raise StartupError(OTEL_MISSING) from exc
    if _provider_for_tests is not None:
        return otel.Tracing(_provider_for_tests, owned=False)
    return otel.Tracing(otel.provider_from_env(environ), owned=True)


@contextlib.contextmanager
def provider_for_tests(provider: Any) -> Iterator[None]:
    """Servers started inside this block trace into `provider` (an in-memory exporter's)."""
    global _provider_for_tests
    _provider_for_tests = provider
    try:
        yield
    finally:
        _provider_for_tests = None

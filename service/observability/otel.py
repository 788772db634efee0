"""OpenTelemetry traces, imported only when tracing is on (tracing.py decides).

Each call is one SERVER span, a child of the trace context the caller sent (W3C `traceparent`, or
whatever OTEL_PROPAGATORS names), with the method, the principal's name, the workspace id, the
request id and the status code as attributes; its database calls are CLIENT spans beneath it
(opentelemetry-instrumentation-asyncpg, which records the SQL text and never its parameters). No
attribute ever holds a value: requests and responses are not looked at, only their workspace id.

The call's span is made here rather than by opentelemetry-instrumentation-grpc: its aio server
interceptor iterates every streaming handler as a generator, which breaks health's Watch (a
coroutine), and it would be a second wrapper on every call beside the one that keeps the metrics
and the access line.

Spans are exported by a BatchSpanProcessor to the exporter OTEL_TRACES_EXPORTER names (`otlp`, the
default, over OTEL_EXPORTER_OTLP_PROTOCOL `grpc` or `http/protobuf`; or `console`), configured by
the standard OTEL_EXPORTER_OTLP_* variables; OTEL_TRACES_SAMPLER applies to the calls' spans. A
database call outside any call (readiness pings, the change listener, the audit writer) starts no
trace of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as otel_sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from service.config import StartupError

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "workflow-secrets"
# The codes semantic conventions count as a server's error (the others are the caller's).
_SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
_CODE_NUMBERS = {code.name: code.value[0] for code in grpc.StatusCode}


class CallsOnly(otel_sampling.Sampler):
    """Starts traces only at calls: a span with no parent that is not a call's is dropped."""

    def __init__(self, root: otel_sampling.Sampler) -> None:
        self._root = root

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> otel_sampling.SamplingResult:
        if kind is not SpanKind.SERVER:
            return otel_sampling.SamplingResult(otel_sampling.Decision.DROP)
        return self._root.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"CallsOnly{{{self._root.get_description()}}}"


def sampler_from_env() -> otel_sampling.Sampler:
    """OTEL_TRACES_SAMPLER for calls (default: parent-based, always on), none for the rest."""
    configured: otel_sampling.Sampler = otel_sampling._get_from_env_or_default()
    return otel_sampling.ParentBased(root=CallsOnly(configured))


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip().lower() for n in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    found: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            found.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = (
                environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "grpc"
            ).strip()
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

                found.append(GrpcExporter())
            elif protocol == "http/protobuf":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

                found.append(HttpExporter())
            else:
                raise StartupError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf for traces, not {protocol!r}"
                )
        else:
            raise StartupError(f"OTEL_TRACES_EXPORTER must be otlp, console or none, not {name!r}")
    return found


def provider_from_env(environ: Mapping[str, str]) -> TracerProvider:
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource, sampler=sampler_from_env(), shutdown_on_exit=False)
    for exporter in _exporters(environ):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class CallSpan:
    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span, token: Any) -> None:
        self.span = span
        self.token = token


class Tracing:
    """One process's tracing: the calls' spans and the database calls' (asyncpg)."""

    def __init__(self, provider: Any, *, owned: bool) -> None:
        self.provider = provider
        self._owned = owned
        self._tracer = provider.get_tracer("service.observability")
        self._propagator = propagate.get_global_textmap()
        self._fields = frozenset(self._propagator.fields)
        self._instrumented = False

    def instrument(self) -> None:
        """Database calls become spans (asyncpg is patched process-wide, so once)."""
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=self.provider)
            self._instrumented = True

    def begin(self, method: Any, context: grpc.aio.ServicerContext[Any, Any]) -> CallSpan:
        # Only the propagation headers are read: never authorization or anything else.
        carrier = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if key in self._fields and isinstance(value, str)
        }
        parent = self._propagator.extract(carrier)
        span = self._tracer.start_span(
            method.path,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": method.service, "rpc.method": method.name},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return CallSpan(span, token)

    def end(self, call: CallSpan, code: str, principal: str, workspace: str, request_id: str) -> None:
        span = call.span
        try:
            if span.is_recording():
                span.set_attribute("rpc.grpc.status_code", _CODE_NUMBERS.get(code, 2))
                span.set_attribute("secrets.principal", principal)
                span.set_attribute("secrets.workspace_id", workspace[:256])
                span.set_attribute("secrets.request_id", request_id)
                if code in _SERVER_ERRORS:
                    span.set_status(Status(StatusCode.ERROR, code))
            span.end()
        finally:
            otel_context.detach(call.token)

    async def close(self) -> None:
        if self._instrumented:
            from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

            AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
            self._instrumented = False
        if self._owned:
            # Exports what is left (a collector that does not answer costs at most its timeout).
            await asyncio.to_thread(self.provider.shutdown)

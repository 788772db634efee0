"""Traces (opt-in through OTEL_*): one resolve's spans, in an in-memory exporter. The call's span
continues the caller's trace and names method, principal, workspace and status; its database
calls are its children; no attribute holds a value. Off, nothing of OpenTelemetry is loaded."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.config import Settings, StartupError
from service.observability import otel, tracing
from service.server import start
from tests.api import ADMIN, Api, W, set_, uid
from tests.conftest import TOKENS
from tests.leaks import canary, find_canaries
from tests.proc import ROOT

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
async def traced(
    database_url: str, secrets_files: tuple[Path, Path, Path]
) -> AsyncIterator[tuple[Api, InMemorySpanExporter]]:
    root, keyring, principals = secrets_files
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=otel.sampler_from_env())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        data_dir=root / "data",
        keyring_file=keyring,
        principals_file=principals,
    )
    with tracing.provider_for_tests(provider):
        running = await start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Api(channel), exporter
    finally:
        await running.stop(grace=1)
        provider.shutdown()


def texts(span: ReadableSpan) -> str:
    """Everything a span carries, as text."""
    parts = [span.name, *(f"{k}={v}" for k, v in (span.attributes or {}).items())]
    for event in span.events:
        parts += [event.name, *(f"{k}={v}" for k, v in (event.attributes or {}).items())]
    return "\n".join(parts)


async def test_one_resolve_spans_continue_the_callers_trace_and_hold_no_value(
    traced: tuple[Api, InMemorySpanExporter],
) -> None:
    api, exporter = traced
    ws, user = uid("ws-trace"), uid("user")
    value = canary("traced")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("API_TOKEN", value))
    await asyncio.sleep(0.2)  # the readiness watcher's pings happen meanwhile: no trace of theirs
    exporter.clear()
    await api.resolver.ResolveInputs(
        _resolve_request(ws, user),
        metadata=[
            ("authorization", f"Bearer {TOKENS['executor']}"),
            ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
        ],
    )
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert call.name == "/secrets.v1.Resolver/ResolveInputs"
    assert call.context is not None and call.parent is not None
    assert format(call.context.trace_id, "032x") == TRACE_ID  # the caller's trace, continued
    assert format(call.parent.span_id, "016x") == PARENT_ID and call.parent.is_remote
    attributes = dict(call.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == "secrets.v1.Resolver" and attributes["rpc.method"] == "ResolveInputs"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["secrets.principal"] == "test-executor"
    assert attributes["secrets.workspace_id"] == ws
    assert len(str(attributes["secrets.request_id"])) == 16
    database = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert database, "the resolve's database reads are spans"
    for span in database:
        assert span.parent is not None and span.parent.span_id == call.context.span_id
        assert span.context is not None and span.context.trace_id == call.context.trace_id
        assert "$1" in str((span.attributes or {}).get("db.statement", "$1"))  # parameters, never their values
    assert {s.context.trace_id for s in spans if s.context is not None} == {call.context.trace_id}

    everything = "\n".join(texts(s) for s in spans)
    assert find_canaries(everything, [value]) == []
    assert TOKENS["executor"] not in everything


async def test_a_refused_call_is_a_span_with_its_code(traced: tuple[Api, InMemorySpanExporter]) -> None:
    api, exporter = traced
    exporter.clear()
    with pytest.raises(grpc.aio.AioRpcError):
        await api.resolver.ResolveInputs(_resolve_request("ws", "u"), metadata=[("authorization", "Bearer nope")])
    (call,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert (call.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert (call.attributes or {})["secrets.principal"] == ""
    assert call.parent is None  # no trace context sent: a trace of its own


def _resolve_request(ws: str, user: str) -> object:
    from google.protobuf import struct_pb2

    from service.gen.secrets.v1 import common_pb2, resolver_pb2

    inputs = struct_pb2.Struct()
    inputs.update({"h": "Bearer {{API_TOKEN}}"})
    return resolver_pb2.ResolveInputsRequest(
        workspace_id=ws,
        trigger=common_pb2.TRIGGER_MANUAL,
        triggering_user_id=user,
        blocks=[common_pb2.BlockInputs(block_id="b", inputs=inputs)],
    )


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_traces_only_when_the_otel_settings_ask(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on


async def test_exporters_from_the_environment() -> None:
    grpc_tracing = tracing.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert grpc_tracing is not None
    await grpc_tracing.close()
    http = tracing.from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert http is not None
    await http.close()
    with pytest.raises(StartupError, match="OTEL_TRACES_EXPORTER"):
        tracing.from_env({"OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(StartupError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing.from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"})


def test_off_nothing_of_opentelemetry_is_loaded() -> None:
    """Without OTEL_* settings a server process never imports OpenTelemetry (nor prometheus_client
    without SECRETS_METRICS_LISTEN): the call observer has no span to make."""
    script = (
        "import sys\n"
        "from service.config import Settings\n"
        "from service.observability import Observability\n"
        "from service.server import SECRET_STORE, RESOLVER\n"
        "o = Observability(Settings(), (SECRET_STORE, RESOLVER), environ={})\n"
        "assert o.tracing is None\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus_client')))\n"
        "assert not loaded, loaded\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)

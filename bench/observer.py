"""The call observer's own cost (service/observability/calls.py), measured in this process: a
stand-in call goes through the interceptor and its wrapper many times, and the CPU time per call
above the same call without the observer is reported for each setting. No network, no server:
what other work on the machine does to throughput hardly changes these figures."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import grpc

from service.observability import metrics
from service.observability.calls import CallObserver
from service.observability.logs import ACCESS_LOGGER, log_handler
from service.server import RESOLVER

PATH = "/secrets.v1.Resolver/ResolveInputs"


class _Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer token"), ("user-agent", "grpc-python"))

    def code(self) -> None:
        return None

    def time_remaining(self) -> float:
        return 10.0


class _Details:
    method = PATH
    invocation_metadata = ()


async def _behavior(request: Any, context: Any) -> bytes:
    return b""


_HANDLER = grpc.unary_unary_rpc_method_handler(_behavior)


async def _continuation(details: Any) -> Any:
    return _HANDLER


async def _per_call(observer: CallObserver | None, calls: int) -> float:
    context: Any = _Context()
    details: Any = _Details()
    began = time.process_time()
    for _ in range(calls):
        handler: Any = await (
            observer.intercept_service(_continuation, details) if observer else _continuation(details)
        )
        await handler.unary_unary(None, context)
    return (time.process_time() - began) / calls * 1e6


async def _measure(calls: int, sink: Any) -> dict[str, float]:
    access = logging.getLogger(ACCESS_LOGGER)
    level, propagate = access.level, access.propagate
    access.propagate = False
    try:
        text, json_lines = log_handler("text", sink), log_handler("json", sink)
        settings: dict[str, tuple[CallObserver, int, logging.Handler | None]] = {
            "observer alone": (CallObserver((RESOLVER,)), logging.WARNING, None),
            "metrics": (
                CallObserver((RESOLVER,), metrics.RpcMetrics(metrics.new_registry(False))),
                logging.WARNING,
                None,
            ),
            "access line, text": (CallObserver((RESOLVER,)), logging.INFO, text),
            "access line, json": (CallObserver((RESOLVER,)), logging.INFO, json_lines),
        }
        try:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            from service.observability.otel import Tracing, sampler_from_env

            provider = TracerProvider(sampler=sampler_from_env())
            exporter = InMemorySpanExporter()
            provider.add_span_processor(BatchSpanProcessor(exporter))  # as a traced server does
            traced = CallObserver((RESOLVER,), tracing=Tracing(provider, owned=False))
            settings["tracing (a span per call)"] = (traced, logging.WARNING, None)
        except ImportError:
            exporter, provider = None, None
        bare = min([await _per_call(None, calls) for _ in range(3)])
        costs: dict[str, float] = {}
        for name, (observer, access_level, handler) in settings.items():
            access.setLevel(access_level)
            if handler is not None:
                access.addHandler(handler)
            try:
                costs[name] = min([await _per_call(observer, calls) for _ in range(3)]) - bare
            finally:
                if handler is not None:
                    access.removeHandler(handler)
                if exporter is not None:
                    exporter.clear()
        if provider is not None:
            provider.shutdown()
        return costs
    finally:
        access.setLevel(level)
        access.propagate = propagate


def measure(calls: int = 20_000) -> dict[str, float]:
    """CPU microseconds per call that the observer adds to a call, alone (access line off, the
    access logger at WARNING) and with each of metrics, the access line, tracing."""
    with open(os.devnull, "w") as sink:
        return asyncio.run(_measure(calls, sink))


if __name__ == "__main__":
    for setting, cost in measure().items():
        print(f"{setting}: {cost:.1f} us")

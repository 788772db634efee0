"""One server interceptor that observes every call: the Prometheus RPC metrics, the access line
and, when tracing is on, the call's span.

It is the outermost interceptor, so it sees every call the server takes, also those the
authentication interceptor refuses (UNAUTHENTICATED, PERMISSION_DENIED) and those of methods
nobody registered (UNIMPLEMENTED). What it records:

- metrics (`grpc_server_started_total`, `grpc_server_handled_total`,
  `grpc_server_handling_seconds`), labelled by service and method only for the methods this server
  registers: any other path is counted as `unknown`, so no caller can add a label value;
- the access line, at INFO; at WARNING when the call was refused (UNAUTHENTICATED,
  PERMISSION_DENIED) and at ERROR for DATA_LOSS and INTERNAL, so that security events stand out;
- the call's span (service/observability/tracing.py), opt-in.

It is on the path of every call (a small resolve takes about 100 us), so the work per call is a
few counter increments, one histogram observation and one log record; labelled children are
looked up once per method and code, not per call.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf import descriptor, descriptor_pool

from service.auth import current_caller
from service.observability.logs import ACCESS_LOGGER, AccessLine, AccessRecord

if TYPE_CHECKING:
    from service.observability.metrics import MethodMetrics, RpcMetrics
    from service.observability.otel import CallSpan, Tracing

# Services every server registers beside secrets.v1 (health and reflection); they are observed too.
STANDARD_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
UNKNOWN = "unknown"
REQUEST_ID_HEADER = "x-request-id"
# A request id a caller sends is kept when it looks like one (a UUID, a hex or base64url id, a
# W3C trace id); anything else is replaced by one of ours rather than copied into the logs.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)

_LEVELS = {
    "UNAUTHENTICATED": logging.WARNING,
    "PERMISSION_DENIED": logging.WARNING,
    "DATA_LOSS": logging.ERROR,
    "INTERNAL": logging.ERROR,
}


def _kind(client_streaming: bool, server_streaming: bool) -> str:
    if client_streaming:
        return "bidi_stream" if server_streaming else "client_stream"
    return "server_stream" if server_streaming else "unary"


class _Method:
    """What one method's calls are named and counted under."""

    __slots__ = ("kind", "metrics", "name", "path", "service")

    def __init__(self, path: str, service: str, name: str, kind: str, metrics: RpcMetrics | None) -> None:
        self.path = path
        self.service = service
        self.name = name
        self.kind = kind
        self.metrics: MethodMetrics | None = metrics.method(kind, service, name) if metrics is not None else None


def known_methods(services: Iterable[descriptor.ServiceDescriptor]) -> list[tuple[str, str, str, str]]:
    """(path, service, method, kind) of every method of `services` and of the standard services
    this process has loaded."""
    found: list[descriptor.ServiceDescriptor] = list(services)
    pool = descriptor_pool.Default()
    for name in STANDARD_SERVICES:
        try:
            found.append(pool.FindServiceByName(name))
        except KeyError:
            continue
    return [
        (f"/{s.full_name}/{m.name}", s.full_name, m.name, _kind(m.client_streaming, m.server_streaming))
        for s in found
        for m in s.methods
    ]


# Request ids this process makes: a random prefix and a counter, unique without a system call.
_ID_PREFIX = secrets.token_hex(4)
_ids = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFF:08x}"


def request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's x-request-id when it is sane, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _SANE_REQUEST_ID.fullmatch(value):
            return value
    return new_request_id()


def workspace_of(request: object) -> str:
    """The workspace id a request names ("" for none). A request the registry holds against its
    byte budget (service/api/registry.py) carries the message in `.message`."""
    if not hasattr(request, "DESCRIPTOR"):
        request = getattr(request, "message", None)
    workspace = getattr(request, "workspace_id", "")
    return workspace if isinstance(workspace, str) else ""


def _code_of(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if isinstance(exc, asyncio.CancelledError):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    return "UNKNOWN"  # what gRPC answers for an exception a handler let out


Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


class CallObserver(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        services: Iterable[descriptor.ServiceDescriptor],
        metrics: RpcMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._metrics = metrics
        self._tracing = tracing
        self._methods = {path: _Method(path, s, m, k, metrics) for path, s, m, k in known_methods(services)}
        self._unknown = _Method(UNKNOWN, UNKNOWN, UNKNOWN, "unary", metrics)
        self._access = logging.getLogger(ACCESS_LOGGER)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        began = time.perf_counter()
        path = handler_call_details.method
        method = self._methods.get(path, self._unknown)
        if method.metrics is not None:
            method.metrics.started.inc()
        try:
            handler = await continuation(handler_call_details)
        except BaseException:
            self._finish(method, path, "UNKNOWN", began, None, None)  # what gRPC answers then
            raise
        if handler is None:
            # No such method: gRPC answers UNIMPLEMENTED without a handler.
            self._finish(method, path, "UNIMPLEMENTED", began, None, None)
            return handler
        if not handler.request_streaming and not handler.response_streaming:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(cast(Behavior, handler.unary_unary), method, path, began),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return self._streaming(handler, method, path, began)

    def _unary(self, behavior: Behavior, method: _Method, path: str, began: float) -> Behavior:
        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            tracing = self._tracing
            span = tracing.begin(method, context) if tracing is not None else None
            code = "OK"
            try:
                response = await behavior(request, context)
                set_code = context.code()
                if isinstance(set_code, grpc.StatusCode):
                    code = set_code.name
                return response
            except BaseException as exc:
                code = _code_of(exc, context)
                raise
            finally:
                self._finish(method, path, code, began, request, context, span)

        return observed

    def _streaming(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: _Method, path: str, began: float
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Health's Watch and reflection: rare, long calls, observed by the same rules."""
        if handler.unary_stream is not None:
            behavior: Any = handler.unary_stream
            make: Callable[..., grpc.RpcMethodHandler[Any, Any]] = grpc.unary_stream_rpc_method_handler
        elif handler.stream_unary is not None:
            behavior, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        else:
            behavior, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler

        if inspect.isasyncgenfunction(behavior):

            async def observed_generator(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                tracing = self._tracing
                span = tracing.begin(method, context) if tracing is not None else None
                code = "OK"
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as exc:
                    code = _code_of(exc, context)
                    raise
                finally:
                    self._finish(method, path, code, began, None, context, span)

            wrapped: Behavior = observed_generator
        else:
            wrapped = self._unary(behavior, method, path, began)
        return make(
            wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    def _finish(
        self,
        method: _Method,
        path: str,
        code: str,
        began: float,
        request: object,
        context: grpc.aio.ServicerContext[Any, Any] | None,
        span: CallSpan | None = None,
    ) -> None:
        elapsed = time.perf_counter() - began
        metrics = method.metrics
        if metrics is not None:
            metrics.seconds.observe(elapsed)
            metrics.handled(code).inc()
            if code == "DATA_LOSS" and self._metrics is not None:
                self._metrics.data_loss.inc()
        level = _LEVELS.get(code, logging.INFO)
        logging_it = self._access.isEnabledFor(level)
        if not logging_it and span is None:
            return
        who = current_caller.get(None)
        principal = who.principal if who is not None else ""
        workspace = workspace_of(request) if request is not None else ""
        rid = request_id(context) if context is not None else new_request_id()
        if span is not None and self._tracing is not None:
            self._tracing.end(span, code, principal, workspace, rid)
        if logging_it:
            user = who.user_id if who is not None else ""
            line = AccessLine(path, code, elapsed * 1000, principal, user, workspace, rid)
            # handle() rather than log(): log() walks the stack for the caller's file and line,
            # which are always this line, and its record looks up more than any format shows.
            self._access.handle(AccessRecord(ACCESS_LOGGER, level, line))

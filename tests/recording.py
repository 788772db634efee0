"""A client interceptor that keeps every response and error a test channel receives, as bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


class ResponseRecorder(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records every service's responses but the Resolver's, whose job is to return values."""

    def __init__(self, skip_prefix: str = "/secrets.v1.Resolver/") -> None:
        self.blobs: list[bytes] = []
        self.recorded_calls = 0
        self._skip = skip_prefix

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else str(method)
        if method.startswith(self._skip):
            return call
        self.recorded_calls += 1
        try:
            response = await call
        except grpc.aio.AioRpcError as err:
            self.blobs.append((err.details() or "").encode())
            self.blobs.append(repr(err.debug_error_string()).encode())
            for key, value in err.trailing_metadata() or ():
                self.blobs.append(key.encode() + b"=" + (value if isinstance(value, bytes) else value.encode()))
            raise
        self.blobs.append(response.SerializeToString())
        return call

    def everything(self) -> bytes:
        return b"\n".join(self.blobs)

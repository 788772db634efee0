"""Helpers every servicer uses."""

from __future__ import annotations

from typing import Any

import grpc

from service.app.context import Caller
from service.auth import current_caller


def caller() -> Caller:
    """The authenticated caller of the RPC being served (set by AuthInterceptor)."""
    return current_caller.get()


async def unimplemented(context: grpc.aio.ServicerContext[Any, Any], name: str) -> Any:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented yet")

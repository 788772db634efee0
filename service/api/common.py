"""Helpers every servicer uses."""

from __future__ import annotations

from service.app.context import Caller
from service.auth import current_caller


def caller() -> Caller:
    """The authenticated caller of the RPC being served (set by AuthInterceptor)."""
    return current_caller.get()

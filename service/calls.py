"""What the call being served carries down to the layers below it: its deadline.

A context variable, set by the api layer's registry for each call and read by the store's pool
(which gives up waiting for a connection before the caller's deadline). It lives outside the
layers because both ends need it and neither may import the other.
"""

from __future__ import annotations

import contextvars

# The deadline (time.monotonic()) of the RPC being served, if the caller set one.
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)

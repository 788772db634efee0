"""Which audit events a ListAuditEvents listing holds (service/app/audit_listing.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Empty fields match every event; the others must all match."""

    workspace_id: str = ""
    # The principal (service) that made the call.
    principal: str = ""
    # The user the event concerns: the editor's user, a resolve's run user, the member put.
    user_id: str = ""
    # Events that used the key, or failed on it.
    key: str = ""
    action: str = ""
    # [start, end): events at or after `start`, before `end`.
    start: datetime | None = None
    end: datetime | None = None

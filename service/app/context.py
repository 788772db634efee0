"""Who is calling: the authenticated principal (a service) and, for editor calls, the person."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    principal: str
    user_id: str = ""
    # The workspaces the principal is scoped to (ids or `prefix*`); None: every workspace.
    workspaces: tuple[str, ...] | None = None
    # An executor that may resolve only with a run grant.
    requires_grant: bool = False

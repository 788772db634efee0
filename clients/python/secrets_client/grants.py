"""The orchestrator's client (role "orchestrator"): run grants for executors.

async with OrchestratorClient("127.0.0.1:50051", orchestrator_token) as orchestrator:
    grant = await orchestrator.issue_grant("ws1", "wf-1", "exec-1", trigger="manual", triggering_user_id="u1")
    # hand grant.token to the executor of this run only; it resolves with
    #   await executor.resolve("", blocks, grant=grant.token)
    ...
    await orchestrator.end_run("ws1", "exec-1")   # every grant of the run stops working
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from secrets_client.client import TRIGGERS, _Client
from secrets_client.gen.secrets.v1 import resolver_pb2 as resolver
from secrets_client.gen.secrets.v1 import resolver_pb2_grpc as resolver_grpc


@dataclass(frozen=True)
class RunGrant:
    """An issued grant. `token` is a credential: give it to the run's executor, never log it."""

    token: str = field(repr=False)
    grant_id: str
    expires_at: datetime
    run_user_id: str


class OrchestratorClient(_Client):
    """For the service that starts workflow runs (role "orchestrator")."""

    async def issue_grant(
        self,
        workspace_id: str,
        workflow_id: str,
        execution_id: str,
        *,
        trigger: str = "manual",
        triggering_user_id: str = "",
        workflow_owner_id: str = "",
        ttl_seconds: int = 0,
        keys: Iterable[str] = (),
        timeout: float | None = None,
    ) -> RunGrant:
        """A grant for one run: 0 seconds means the service's default (one hour, capped at a day);
        `keys`, when given, are the only keys the run may resolve."""
        request = resolver.IssueRunGrantRequest(
            workspace_id=workspace_id,
            workflow_id=workflow_id,
            execution_id=execution_id,
            trigger=TRIGGERS[trigger],
            triggering_user_id=triggering_user_id,
            workflow_owner_id=workflow_owner_id,
            ttl_seconds=ttl_seconds,
            keys=list(keys),
        )
        reply = await self._call(resolver_grpc.ResolverStub(self.channel).IssueRunGrant, request, timeout=timeout)
        return RunGrant(reply.grant, reply.grant_id, reply.expires_at.ToDatetime(), reply.run_user_id)

    async def revoke_grant(self, workspace_id: str, *, grant_id: str = "", token: str = "") -> bool:
        """Revokes one grant, by its id or its token; False when it had already stopped."""
        request = resolver.RevokeRunGrantRequest(workspace_id=workspace_id, grant_id=grant_id, grant=token)
        reply = await self._call(resolver_grpc.ResolverStub(self.channel).RevokeRunGrant, request)
        return reply.revoked

    async def end_run(self, workspace_id: str, execution_id: str) -> int:
        """Ends a run: every grant of the execution stops working. Returns how many did now."""
        request = resolver.EndRunRequest(workspace_id=workspace_id, execution_id=execution_id)
        reply = await self._call(resolver_grpc.ResolverStub(self.channel).EndRun, request)
        return reply.grants_ended

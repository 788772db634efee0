"""A principal scoped to some workspaces is refused on any other with PERMISSION_DENIED, by the
registry's scope check, which runs before any field is validated. Its message quoted the
request's workspace_id whole: a 70,000-character id made a status message over gRPC's 16 KiB
limit on metadata, and the caller got RESOURCE_EXHAUSTED "Stream removed" (the server's answer
was thrown away on the way) instead of PERMISSION_DENIED. The refusal now quotes at most the
first 256 characters of an id (the longest a valid one can be)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from service.auth import hash_token
from service.config import Settings
from service.crypto.keyring import write_private_json
from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import resolver_pb2 as rpb
from service.gen.secrets.v1 import secret_store_pb2 as spb
from service.server import start
from tests.api import Api

SCOPED = "scoped-all-roles-token"


def md() -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {SCOPED}"), ("x-user-id", "u1")]


@pytest.fixture
async def api(database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path) -> AsyncIterator[Api]:
    _, keyring, _ = secrets_files
    principals = tmp_path / "principals.json"
    roles = ["editor", "executor", "directory", "ops", "orchestrator"]
    entry = {"name": "scoped", "roles": roles, "token_sha256": hash_token(SCOPED), "workspaces": ["team-*"]}
    write_private_json(principals, {"principals": [entry]})
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        data_dir=tmp_path / "d",
        keyring_file=keyring,
        principals_file=principals,
    )
    running = await start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Api(channel)
    finally:
        await running.stop(grace=1)


@pytest.mark.parametrize("length", [257, 10_000, 70_000])
async def test_a_scoped_principal_sending_a_long_foreign_workspace_id_is_permission_denied(
    api: Api, length: int
) -> None:
    workspace_id = "other-" + "x" * (length - 6)
    calls = [
        api.store.ListSecrets(spb.ListSecretsRequest(workspace_id=workspace_id), metadata=md()),
        api.resolver.ResolveInputs(
            rpb.ResolveInputsRequest(workspace_id=workspace_id, trigger=common.TRIGGER_MANUAL, triggering_user_id="u1"),
            metadata=md(),
        ),
        api.ops.ListAuditEvents(opb.ListAuditEventsRequest(workspace_id=workspace_id), metadata=md()),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
        details = err.value.details() or ""
        assert "is not scoped to workspace 'other-xxx" in details
        assert len(details) < 600

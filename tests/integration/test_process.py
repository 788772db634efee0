"""`python -m service` in development mode: embedded Postgres, generated keys, SIGTERM, restart."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.gen.secrets.v1 import common_pb2 as common
from service.gen.secrets.v1 import directory_pb2 as dpb
from service.gen.secrets.v1 import directory_pb2_grpc as dgrpc
from service.gen.secrets.v1 import secret_store_pb2 as spb
from service.gen.secrets.v1 import secret_store_pb2_grpc as sgrpc
from tests.proc import ServerProcess

pytestmark = pytest.mark.slow


def bearer(tokens: dict[str, str], name: str, user: str | None = None) -> list[tuple[str, str]]:
    md = [("authorization", f"Bearer {tokens[name]}")]
    return md + ([("x-user-id", user)] if user else [])


async def test_dev_mode_embedded_postgres_keeps_data_and_sigterm_drains(tmp_path: Path) -> None:
    data = tmp_path / "d"
    first = ServerProcess({"SECRETS_DATA_DIR": str(data)}, tmp_path / "first.log")
    try:
        keyring = data / "keyring.json"
        assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
        assert "generated a master keyring" in first.log()
        tokens = json.loads((data / "dev-tokens.json").read_text())
        principals = (data / "principals.json").read_text()
        assert all(token not in principals for token in tokens.values())  # hashes only
        assert tokens["dev-editor"] in first.log()  # printed once, at generation
        assert "grpcurl -plaintext" in first.log()

        async with grpc.aio.insecure_channel(first.address) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            for i in range(40):
                await dgrpc.DirectoryStub(ch).PutWorkspaceMember(
                    dpb.PutWorkspaceMemberRequest(
                        workspace_id="ws",
                        user_id=f"user{i}",
                        email=f"user{i}@example.com",
                        permission=common.WORKSPACE_PERMISSION_READ,
                    ),
                    metadata=bearer(tokens, "dev-directory"),
                )
            store = sgrpc.SecretStoreStub(ch)

            acked = [0] * 40

            async def keep_saving(i: int) -> grpc.aio.AioRpcError:
                """Saves K for user i again and again until the server stops taking calls."""
                while True:
                    try:
                        await store.SaveSecrets(
                            spb.SaveSecretsRequest(
                                workspace_id="ws",
                                scope=common.SCOPE_PERSONAL,
                                expected_revision=acked[i],
                                changes=[spb.SecretChange(key="K", value=f"v{acked[i]}")],
                            ),
                            metadata=bearer(tokens, "dev-editor", f"user{i}"),
                        )
                    except grpc.aio.AioRpcError as err:
                        return err
                    acked[i] += 1

            # Forty streams of saves, in flight when SIGTERM arrives. Calls the server has started
            # are drained (they complete and are acknowledged); calls still queued in gRPC core
            # when it shuts down are refused, as CANCELLED (grpc/grpc#41785) or UNAVAILABLE,
            # before any handler runs.
            streams = [asyncio.ensure_future(keep_saving(i)) for i in range(40)]
            await asyncio.sleep(0.3)
            loop = asyncio.get_running_loop()
            exit_code = await loop.run_in_executor(None, first.terminate)
            refusals = await asyncio.gather(*streams)
        assert exit_code == 0
        for err in refusals:
            assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), err
        assert sum(acked) > 0, "no save completed before shutdown"
    except BaseException:
        first.kill() if first.proc.poll() is None else None
        raise

    second = ServerProcess({"SECRETS_DATA_DIR": str(data)}, tmp_path / "second.log")
    try:
        assert "development mode: generated" not in second.log()  # same keyring and principals as before
        # Tokens are printed once, on the start that generated them; later starts say where they are.
        assert all(token not in second.log() for token in tokens.values())
        assert str(data / "dev-tokens.json") in second.log()
        async with grpc.aio.insecure_channel(second.address) as ch:
            store = sgrpc.SecretStoreStub(ch)
            for i in range(40):
                listing = await store.ListSecrets(
                    spb.ListSecretsRequest(workspace_id="ws"), metadata=bearer(tokens, "dev-editor", f"user{i}")
                )
                # Every acknowledged save is there, and nothing the client saw refused.
                assert listing.personal_revision == acked[i], (i, listing.personal_revision, acked[i])
                if acked[i]:
                    assert [(s.key, s.version) for s in listing.personal_secrets] == [("K", acked[i])]
        assert second.terminate() == 0
    except BaseException:
        second.kill() if second.proc.poll() is None else None
        raise

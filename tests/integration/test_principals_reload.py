"""Tokens are added and revoked by editing the principals file, without a restart; a file that
stops loading revokes every token (it fails closed, SPEC 4.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from service.auth import hash_token
from service.config import Settings
from service.crypto.keyring import write_private_json
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import operations_pb2_grpc as ogrpc
from service.server import start
from tests.api import status_of


def principals(path: Path, **tokens: str) -> None:
    write_private_json(
        path, {"principals": [{"name": n, "roles": ["ops"], "token_sha256": hash_token(t)} for n, t in tokens.items()]}
    )


async def test_revoked_token_stops_working_and_new_one_starts_within_seconds(
    database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    keyring, file = secrets_files[1], tmp_path / "principals.json"  # the session database's keyring
    principals(file, old="old-token")
    running = await start(
        Settings(
            listen="127.0.0.1:0",
            database_url=database_url,
            data_dir=tmp_path / "d",
            keyring_file=keyring,
            principals_file=file,
        )
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = ogrpc.OperationsStub(ch)

            def call(token: str) -> grpc.aio.UnaryUnaryCall:  # type: ignore[type-arg]
                return stub.GetKeyStatus(opb.GetKeyStatusRequest(), metadata=[("authorization", f"Bearer {token}")])

            await call("old-token")
            principals(file, new="new-token")  # "old" revoked, "new" issued
            for _ in range(40):
                await asyncio.sleep(0.1)
                try:
                    await call("new-token")
                    break
                except grpc.aio.AioRpcError:
                    continue
            else:
                raise AssertionError("the new token was not accepted within 4 s")
            assert (await status_of(call("old-token"))).code() == grpc.StatusCode.UNAUTHENTICATED

            file.write_text("{ not json")  # a broken edit revokes every token; it never keeps old ones
            await asyncio.sleep(1.2)
            assert (await status_of(call("new-token"))).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await running.stop(grace=1)

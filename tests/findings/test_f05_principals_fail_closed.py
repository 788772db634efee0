"""F5: revoking tokens failed open.

The principals file is re-read when it changes, and the reload kept the previous principals when
the new file did not load: `{"principals": []}`, a principal with `roles: []` or a deleted file
left every old token working, so the last principal could not be revoked at all. Now a reload
fails closed: an empty list means no principals, and a file that fails validation, is deleted or
cannot be read revokes every token (logged at ERROR); old tokens are never kept.

Also: the `x-user-id` header follows the one rule for ids (`id_problem`) and a bad one is
INVALID_ARGUMENT naming the field, with a BadRequest field violation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from service.auth import Principals, hash_token
from service.config import Settings
from service.crypto.keyring import write_private_json
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import operations_pb2_grpc as ogrpc
from service.gen.secrets.v1 import secret_store_pb2 as spb
from service.gen.secrets.v1 import secret_store_pb2_grpc as sgrpc
from service.server import Running, start
from service.watched import WatchedFile
from tests.api import status_of
from tests.conftest import Server, metadata

# --- WatchedFile: the contract the principals and the keyring both rely on -----------------------


def _number(path: Path) -> int:
    return int(path.read_text())  # ValueError when not a number; FileNotFoundError when gone


def test_with_on_error_a_bad_edit_or_a_deleted_file_replaces_the_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "n"
    path.write_text("1")
    watched = WatchedFile("number", path, 1, _number, (ValueError,), on_error=lambda exc: -1)
    assert watched.current() == 1

    path.write_text("not a number")
    with caplog.at_level(logging.INFO):
        assert watched.current() == -1
    assert any(r.levelno == logging.ERROR and "number" in r.getMessage() for r in caplog.records)
    assert (watched.reloads_ok, watched.reloads_refused) == (0, 1)

    path.write_text("22")
    assert watched.current() == 22
    assert (watched.reloads_ok, watched.reloads_refused) == (1, 1)

    caplog.clear()
    path.unlink()  # gone: not "unchanged"
    assert watched.current() == -1
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert (watched.reloads_ok, watched.reloads_refused) == (1, 2)
    assert watched.current() == -1  # still gone, nothing more to count
    assert watched.reloads_refused == 2

    path.write_text("3")
    assert watched.current() == 3


def test_without_on_error_a_bad_edit_keeps_the_previous_value(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "n"
    path.write_text("1")
    watched = WatchedFile("number", path, 1, _number, (ValueError,))
    path.write_text("nope")
    assert watched.current() == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "refused" in errors[0] and "keeping the previous" in errors[0]
    path.unlink()
    assert watched.current() == 1
    assert watched.reloads_refused == 2


def test_accept_may_refuse_a_value_that_loads(tmp_path: Path) -> None:
    path = tmp_path / "n"
    path.write_text("1")

    def accept(value: int) -> None:
        if value < 0:
            raise ValueError("negative numbers are refused")

    kept = WatchedFile("number", path, 1, _number, (ValueError,), accept=accept)
    closed = WatchedFile("number", path, 1, _number, (ValueError,), accept=accept, on_error=lambda exc: 0)
    path.write_text("-5")
    assert (kept.current(), closed.current()) == (1, 0)
    assert kept.reloads_refused == closed.reloads_refused == 1
    path.write_text("7")
    assert (kept.current(), closed.current()) == (7, 7)
    assert kept.reloads_ok == closed.reloads_ok == 1


def test_an_empty_principals_list_is_a_valid_file_with_no_principals() -> None:
    none = Principals.from_json({"principals": []})
    assert len(none) == 0
    assert none.authenticate("anything") is None


# --- the running server ----------------------------------------------------------------------------


def _principals(path: Path, **tokens: str) -> None:
    write_private_json(
        path, {"principals": [{"name": n, "roles": ["ops"], "token_sha256": hash_token(t)} for n, t in tokens.items()]}
    )


@pytest.fixture
async def watched_server(
    database_url: str, secrets_files: tuple[Path, Path, Path], tmp_path: Path
) -> AsyncIterator[tuple[Running, Path]]:
    keyring, file = secrets_files[1], tmp_path / "principals.json"  # the session's keyring: same database
    _principals(file, only="only-token")
    running = await start(
        Settings(
            listen="127.0.0.1:0",
            database_url=database_url,
            data_dir=tmp_path / "d",
            keyring_file=keyring,
            principals_file=file,
        )
    )
    yield running, file
    await running.stop(grace=1)


async def _code(stub: ogrpc.OperationsStub, token: str) -> grpc.StatusCode:
    try:
        await stub.GetKeyStatus(opb.GetKeyStatusRequest(), metadata=[("authorization", f"Bearer {token}")])
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def _becomes(stub: ogrpc.OperationsStub, token: str, wanted: grpc.StatusCode, within: float = 4.0) -> None:
    code = grpc.StatusCode.UNKNOWN
    for _ in range(int(within / 0.1)):
        code = await _code(stub, token)
        if code == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"token {token!r}: still {code} after {within}s, wanted {wanted}")


def _bad_edits() -> dict[str, Callable[[Path], None]]:
    def roles_empty(p: Path) -> None:
        write_private_json(p, {"principals": [{"name": "only", "roles": [], "token_sha256": hash_token("only-token")}]})

    return {
        "not json": lambda p: p.write_text("{ not json"),
        "no roles": roles_empty,
        "deleted": lambda p: p.unlink(),
        "not an object": lambda p: p.write_text("[]"),
    }


@pytest.mark.parametrize("edit", list(_bad_edits()))
async def test_a_principals_file_that_cannot_be_used_revokes_every_token(
    watched_server: tuple[Running, Path], edit: str, caplog: pytest.LogCaptureFixture
) -> None:
    running, file = watched_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        stub = ogrpc.OperationsStub(ch)
        assert await _code(stub, "only-token") == grpc.StatusCode.OK
        caplog.clear()
        _bad_edits()[edit](file)
        await _becomes(stub, "only-token", grpc.StatusCode.UNAUTHENTICATED)
        assert any(r.levelno == logging.ERROR and "principals" in r.getMessage() for r in caplog.records)
        # A fixed file brings its tokens back.
        _principals(file, only="only-token")
        await _becomes(stub, "only-token", grpc.StatusCode.OK)


async def test_the_last_principal_can_be_revoked_with_an_empty_list(watched_server: tuple[Running, Path]) -> None:
    running, file = watched_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        stub = ogrpc.OperationsStub(ch)
        assert await _code(stub, "only-token") == grpc.StatusCode.OK
        write_private_json(file, {"principals": []})
        await _becomes(stub, "only-token", grpc.StatusCode.UNAUTHENTICATED)
        await asyncio.sleep(1.2)  # and it stays revoked
        assert await _code(stub, "only-token") == grpc.StatusCode.UNAUTHENTICATED


async def test_an_unreadable_principals_file_revokes_every_token(watched_server: tuple[Running, Path]) -> None:
    running, file = watched_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        stub = ogrpc.OperationsStub(ch)
        assert await _code(stub, "only-token") == grpc.StatusCode.OK
        # Unreadable whoever runs the test (a file's mode does not stop root): a directory where
        # the file was.
        file.unlink()
        file.mkdir()
        await _becomes(stub, "only-token", grpc.StatusCode.UNAUTHENTICATED)


# --- x-user-id: the one rule for ids ---------------------------------------------------------------


async def _list_as(server: Server, user: str) -> grpc.aio.AioRpcError | None:
    async with grpc.aio.insecure_channel(server.address) as ch:
        try:
            await sgrpc.SecretStoreStub(ch).ListSecrets(
                spb.ListSecretsRequest(workspace_id="ws-f05"), metadata=metadata("editor", user)
            )
        except grpc.aio.AioRpcError as err:
            return err
    return None


async def test_a_bad_user_id_header_is_invalid_argument_naming_the_field(server: Server) -> None:
    # (Control characters cannot be sent at all: gRPC clients refuse them in ASCII metadata.)
    err = await _list_as(server, "u" * 257)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "x-user-id is longer than 256 characters"
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["x-user-id"]


async def test_a_user_id_header_as_long_as_any_other_id_is_accepted(server: Server) -> None:
    err = await _list_as(server, "u" * 256)
    assert err is None or err.code() != grpc.StatusCode.INVALID_ARGUMENT, err


async def test_a_missing_user_id_header_is_still_unauthenticated(server: Server) -> None:
    async with grpc.aio.insecure_channel(server.address) as ch:
        err = await status_of(
            sgrpc.SecretStoreStub(ch).ListSecrets(spb.ListSecretsRequest(workspace_id="w"), metadata=metadata("editor"))
        )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

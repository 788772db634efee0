"""The access line: one per call, at INFO (WARNING when refused, ERROR for DATA_LOSS), with method,
principal, user, workspace, code, duration and request id, and never a value; as JSON with
SECRETS_LOG_FORMAT=json."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import ConfigError, Settings
from service.observability.logs import ACCESS_LOGGER, AccessLine, JsonFormatter
from tests.api import ADMIN, Api, W, set_, status_of, uid
from tests.conftest import Server, metadata
from tests.leaks import canary, find_canaries


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """The access lines written while the test runs, formatted as SECRETS_LOG_FORMAT=json does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield Api(channel)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]  # every line is one JSON object


async def test_one_json_access_line_per_call_with_the_caller(
    api: Api, server: Server, access_lines: io.StringIO
) -> None:
    ws, user = uid("ws-log"), uid("user")
    value = canary("logged")
    async with grpc.aio.insecure_channel(server.address) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), metadata=[("x-request-id", "req-0123456789abcdef")]
        )
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("API_TOKEN", value))
    await api.resolve(ws, {"b": {"h": "Bearer {{API_TOKEN}}"}}, user=user)
    refused = await status_of(_bad_token_list(api, ws))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    # A request id that is not sane (spaces, quotes) is replaced, not copied into the log.
    await api.store.ListSecrets(
        _list_request(ws), metadata=[*metadata("editor", user), ("x-request-id", 'forged" line INFO ok')]
    )

    lines = parsed(access_lines)
    by_method: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        assert line["logger"] == ACCESS_LOGGER and line["message"] == "rpc"
        assert set(line) >= {"time", "level", "pid", "method", "principal", "user", "workspace", "code"}
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        by_method.setdefault(line["method"], []).append(line)

    (check,) = by_method["/grpc.health.v1.Health/Check"]
    assert check["code"] == "OK" and check["level"] == "INFO" and check["principal"] == ""
    assert check["request_id"] == "req-0123456789abcdef"

    # The caller the authentication interceptor set is visible where the line is written.
    (member,) = by_method["/secrets.v1.Directory/PutWorkspaceMember"]
    assert member["principal"] == "test-directory" and member["workspace"] == ws and member["user"] == ""
    (resolve,) = by_method["/secrets.v1.Resolver/ResolveInputs"]
    assert resolve["principal"] == "test-executor" and resolve["workspace"] == ws and resolve["code"] == "OK"
    assert len(resolve["request_id"]) == 16  # generated: none was sent
    saves = by_method["/secrets.v1.SecretStore/SaveSecrets"]
    assert [(s["principal"], s["user"], s["code"]) for s in saves] == [("test-editor", user, "OK")]
    listings = by_method["/secrets.v1.SecretStore/ListSecrets"]
    refusal = next(line for line in listings if line["code"] == "UNAUTHENTICATED")
    assert refusal["level"] == "WARNING" and refusal["principal"] == ""  # a security event
    forged = next(line for line in listings if line["code"] == "OK" and line["user"] == user and line is not refusal)
    assert "forged" not in forged["request_id"] and len(forged["request_id"]) == 16

    assert find_canaries(access_lines.getvalue(), [value]) == []


def _list_request(ws: str) -> Any:
    from service.gen.secrets.v1 import secret_store_pb2 as spb

    return spb.ListSecretsRequest(workspace_id=ws)


def _bad_token_list(api: Api, ws: str) -> Any:
    return api.store.ListSecrets(
        _list_request(ws), metadata=[("authorization", "Bearer wrong"), ("x-user-id", "someone")]
    )


def test_text_access_line_quotes_what_a_caller_chose() -> None:
    line = AccessLine("/secrets.v1.Resolver/ResolveInputs", "OK", 0.1234, "exec", "", "ws 1\nFAKE line", "abc")
    text = str(line)
    assert "\n" not in text
    assert text.startswith("/secrets.v1.Resolver/ResolveInputs OK 0.12 ms principal=exec user=- ")
    assert 'workspace="ws 1\\nFAKE line"' in text
    long = AccessLine("/m", "OK", 1, "p", "", "w" * 10_000, "r")
    assert len(str(long)) < 400 and len(json.dumps(long.fields())) < 500


def test_json_formatter_one_line_per_record_with_exceptions() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("service", logging.ERROR, __file__, 1, "failed %s", ("x\ny",), exc_info=True)
        record.exc_info = __import__("sys").exc_info()
    out = formatter.format(record)
    assert "\n" not in out
    doc = json.loads(out)
    assert doc["message"] == "failed x\ny" and doc["level"] == "ERROR" and "ValueError" in doc["exception"]


def test_log_format_setting() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"SECRETS_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="SECRETS_LOG_FORMAT"):
        Settings.from_env({"SECRETS_LOG_FORMAT": "xml"})


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_access_lines_are_written_in_batches_everything_else_at_once() -> None:
    from service.observability.logs import AccessRecord, flush_logs, log_handler

    stream = _CountingStream()
    handler = log_handler("text", stream)
    line = AccessLine("/m", "OK", 1.0, "p", "", "w", "r")
    handler.handle(AccessRecord(ACCESS_LOGGER, logging.INFO, line))  # the first: the last flush is old
    flushed = stream.flushes
    handler.handle(AccessRecord(ACCESS_LOGGER, logging.INFO, line))
    assert stream.flushes == flushed  # batched
    handler.handle(AccessRecord(ACCESS_LOGGER, logging.WARNING, line))
    assert stream.flushes == flushed + 1  # a refusal: at once
    handler.handle(logging.LogRecord("service", logging.INFO, __file__, 1, "ready again", (), None))
    assert stream.flushes == flushed + 2  # not an access line: at once
    handler.handle(AccessRecord(ACCESS_LOGGER, logging.INFO, line))
    flush_logs()
    assert stream.flushes >= flushed + 3
    assert stream.getvalue().count(" /m OK 1.00 ms principal=p ") == 4


def test_text_lines_keep_loggings_time_format() -> None:
    from service.observability.logs import TEXT_FORMAT, TextFormatter

    record = logging.LogRecord("service", logging.INFO, __file__, 1, "hello", (), None)
    assert TextFormatter().format(record) == logging.Formatter(TEXT_FORMAT).format(record)


def test_workspace_of_requests_as_the_registry_passes_them() -> None:
    from service.api.registry import Held, RequestBudget, Undecodable
    from service.observability.calls import workspace_of

    assert workspace_of(_list_request("ws-plain")) == "ws-plain"
    # A large request held against the byte budget reaches the handler wrapped.
    assert workspace_of(Held(_list_request("ws-held"), 10, RequestBudget(100))) == "ws-held"
    assert workspace_of(Undecodable("truncated")) == ""

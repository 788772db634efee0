"""Keepalive and connection age (SECRETS_KEEPALIVE_*, SECRETS_MAX_CONNECTION_AGE_*): accepted,
checked, and applied, so a long-lived channel reconnects (and a new connection may land on
another replica)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import ConfigError, Settings
from service.server import Running, start


def test_keepalive_settings() -> None:
    default = Settings.from_env({})
    assert (default.keepalive_time_s, default.keepalive_timeout_s) == (60, 20)
    assert (default.max_connection_age_s, default.max_connection_age_grace_s) == (300, 600)
    chosen = Settings.from_env(
        {
            "SECRETS_KEEPALIVE_TIME_S": "30",
            "SECRETS_KEEPALIVE_TIMEOUT_S": "5",
            "SECRETS_MAX_CONNECTION_AGE_S": "0",
            "SECRETS_MAX_CONNECTION_AGE_GRACE_S": "120",
        }
    )
    assert (chosen.keepalive_time_s, chosen.keepalive_timeout_s) == (30, 5)
    assert (chosen.max_connection_age_s, chosen.max_connection_age_grace_s) == (0, 120)
    for name, bad in (
        ("SECRETS_KEEPALIVE_TIME_S", "0"),
        ("SECRETS_KEEPALIVE_TIMEOUT_S", "soon"),
        ("SECRETS_MAX_CONNECTION_AGE_S", "-1"),
        ("SECRETS_MAX_CONNECTION_AGE_GRACE_S", "0"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: bad})


def test_metrics_listen_setting() -> None:
    assert Settings.from_env({}).metrics_listen is None
    assert Settings.from_env({"SECRETS_METRICS_LISTEN": "0.0.0.0:9464"}).metrics_listen == "0.0.0.0:9464"
    for bad in ("9464x", "localhost", "host:99999"):
        with pytest.raises(ConfigError, match="SECRETS_METRICS_LISTEN"):
            Settings.from_env({"SECRETS_METRICS_LISTEN": bad})
    with pytest.raises(ConfigError, match="SECRETS_LISTEN"):
        Settings.from_env({"SECRETS_METRICS_LISTEN": "127.0.0.1:50051"})


@pytest.fixture
async def short_lived(database_url: str, secrets_files: tuple[Path, Path, Path]) -> AsyncIterator[Running]:
    root, keyring, principals = secrets_files
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        data_dir=root / "data",
        keyring_file=keyring,
        principals_file=principals,
    )
    running = await start(
        replace(
            settings, keepalive_time_s=1, keepalive_timeout_s=1, max_connection_age_s=1, max_connection_age_grace_s=1
        )
    )
    yield running
    await running.stop(grace=1)


async def test_connections_are_closed_after_their_age_and_calls_go_on(short_lived: Running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{short_lived.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest())
        assert channel.get_state() is grpc.ChannelConnectivity.READY
        # After the age (1 s, give or take gRPC's 10 % jitter) and its grace, the server closes
        # the connection: the idle channel lets it go, and reconnects for the next call.
        for _ in range(60):
            await asyncio.sleep(0.1)
            if channel.get_state() is not grpc.ChannelConnectivity.READY:
                break
        assert channel.get_state() is not grpc.ChannelConnectivity.READY
        reply = await health.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

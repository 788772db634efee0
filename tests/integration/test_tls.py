"""TLS and mutual TLS with certificates this test makes."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import ConfigError, Settings
from service.crypto.keyring import new_keyring_document, write_private_json
from service.gen.secrets.v1 import operations_pb2 as opb
from service.gen.secrets.v1 import operations_pb2_grpc as ogrpc
from service.server import Running, start
from tests.conftest import TOKENS, write_principals


@pytest.fixture
async def database_url(fresh_database_url: str) -> str:
    """This module's servers use keyrings of their own, so each test gets a database of its own."""
    return fresh_database_url


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(root: Path) -> dict[str, Path]:
    now = datetime.datetime.now(datetime.UTC)

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        ca: bool,
        usage: x509.ObjectIdentifier | None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    files: dict[str, Path] = {}

    def write(name: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
        files[f"{name}_cert"] = root / f"{name}.crt"
        files[f"{name}_cert"].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            files[f"{name}_key"] = root / f"{name}.key"
            files[f"{name}_key"].write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("test-ca", ca_key, "test-ca", ca_key, True, None)
    write("ca", ca, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    write(
        "server", cert("localhost", server_key, "test-ca", ca_key, False, ExtendedKeyUsageOID.SERVER_AUTH), server_key
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    write(
        "client", cert("executor-1", client_key, "test-ca", ca_key, False, ExtendedKeyUsageOID.CLIENT_AUTH), client_key
    )
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    write(
        "rogue", cert("rogue", rogue_key, "other-ca", other_ca_key, False, ExtendedKeyUsageOID.CLIENT_AUTH), rogue_key
    )
    return files


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return make_pki(tmp_path)


async def tls_server(database_url: str, tmp_path: Path, pki: dict[str, Path], mutual: bool) -> Running:
    keyring = tmp_path / "keyring.json"
    write_private_json(keyring, new_keyring_document())
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=database_url,
        data_dir=tmp_path / "d",
        keyring_file=keyring,
        principals_file=write_principals(tmp_path / "principals.json"),
        tls_cert_file=pki["server_cert"],
        tls_key_file=pki["server_key"],
        tls_client_ca_file=pki["ca_cert"] if mutual else None,
    )
    return await start(settings)


async def health(port: int, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


@pytest.fixture
async def tls(database_url: str, tmp_path: Path, pki: dict[str, Path]) -> AsyncIterator[Running]:
    running = await tls_server(database_url, tmp_path, pki, mutual=False)
    yield running
    await running.stop(grace=1)


@pytest.fixture
async def mtls(database_url: str, tmp_path: Path, pki: dict[str, Path]) -> AsyncIterator[Running]:
    running = await tls_server(database_url, tmp_path, pki, mutual=True)
    yield running
    await running.stop(grace=1)


async def test_tls_serves_clients_that_trust_the_ca(tls: Running, pki: dict[str, Path]) -> None:
    trusted = grpc.ssl_channel_credentials(root_certificates=pki["ca_cert"].read_bytes())
    assert await health(tls.port, trusted) == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.secure_channel(f"localhost:{tls.port}", trusted) as ch:
        reply = await ogrpc.OperationsStub(ch).GetKeyStatus(
            opb.GetKeyStatusRequest(), metadata=[("authorization", f"Bearer {TOKENS['ops']}")]
        )
        assert reply.primary_key_id == "k1"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health(tls.port, grpc.ssl_channel_credentials())  # system roots do not know this CA
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(f"localhost:{tls.port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError):
            await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls: Running, pki: dict[str, Path]) -> None:
    ca = pki["ca_cert"].read_bytes()
    with_cert = grpc.ssl_channel_credentials(ca, pki["client_key"].read_bytes(), pki["client_cert"].read_bytes())
    assert await health(mtls.port, with_cert) == health_pb2.HealthCheckResponse.SERVING
    for credentials in (
        grpc.ssl_channel_credentials(ca),  # no client certificate
        grpc.ssl_channel_credentials(ca, pki["rogue_key"].read_bytes(), pki["rogue_cert"].read_bytes()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health(mtls.port, credentials)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_must_come_together() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"SECRETS_TLS_KEY_FILE": "k"})
    with pytest.raises(ConfigError):
        Settings.from_env({"SECRETS_TLS_CLIENT_CA_FILE": "ca"})

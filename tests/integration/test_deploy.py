"""The deployment files, run for real where no container engine runs (issue 10, item 7).

docker-compose.yml and deploy/k8s are read as a container engine or the kubelet would read them;
the files they mount are made with the same command the compose init step runs (or the commands
kustomization.yaml documents for the Kubernetes Secrets); and the real server (`python -m
service`) is started with exactly the environment that the container would get, with hosts,
ports, paths and the database mapped to local ones. The server must then be healthy, by the same
checks the files declare, and serve a real save and resolve with the tokens those steps made.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from secrets_client import DirectoryClient, EditorClient, ExecutorClient

from service.config import ConfigError, Settings
from tests.proc import ServerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
# The server's user in the image (Dockerfile USER), which the init step gives its files to.
IMAGE_USER = "10001:10001"


def known_settings() -> set[str]:
    """Every SECRETS_* name service/config.py reads, recorded as it reads them."""
    read: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            read.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> str:
            read.add(key)
            return super().__getitem__(key)

        def __contains__(self, key: object) -> bool:
            read.add(str(key))
            return super().__contains__(key)

    with contextlib.suppress(ConfigError):
        Settings.from_env(Recording())
    names = {name for name in read if name.startswith("SECRETS_")}
    assert "SECRETS_DATABASE_URL" in names, names  # the recording saw the reads
    return names


def dockerfile_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (the image the compose file and Deployment run)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    last_stage = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in last_stage.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                name, _, value = item.partition("=")
                env[name] = value
    return env


_VARIABLE = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}`, `${NAME:?error}` and `$$`, as `docker compose` does."""

    def one(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        value = variables.get(name)
        if op in (":-", "-") and (value is None or (op == ":-" and not value)):
            return arg
        assert value is not None and (value or op != ":?"), f"the compose file needs {name}: {arg}"
        return value

    result = _VARIABLE.sub(one, text)
    assert "$" not in _VARIABLE.sub("", text), f"unsupported substitution in {text!r}"
    return result


def compose_environment(service: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, str]:
    given = service.get("environment") or {}
    if isinstance(given, list):
        given = dict(item.split("=", 1) for item in given)
    return {name: interpolate(str(value), variables) for name, value in given.items()}


class Filesystem:
    """A container's file system as local directories: each mount (a named volume or a pod
    volume) is a directory of its own, everything else the image's own (a directory per test)."""

    def __init__(self, image_root: Path) -> None:
        self.image_root = image_root
        self.mounts: dict[PurePosixPath, Path] = {}

    def mount(self, target: str, local: Path) -> None:
        self.mounts[PurePosixPath(target)] = local

    def local(self, container_path: str) -> Path:
        path = PurePosixPath(container_path)
        assert path.is_absolute(), container_path
        for target in sorted(self.mounts, key=lambda p: len(p.parts), reverse=True):
            if path == target or target in path.parents:
                return self.mounts[target].joinpath(*path.relative_to(target).parts)
        return self.image_root.joinpath(*path.parts[1:])


def compose_filesystem(service: Mapping[str, Any], volumes: Path, image_root: Path) -> tuple[Filesystem, set[str]]:
    """The service's mounts of named volumes (short syntax `name:/path[:ro]`); returns the file
    system and the targets mounted read-only."""
    fs = Filesystem(image_root)
    read_only: set[str] = set()
    for spec in service.get("volumes", []):
        source, target, *options = spec.split(":")
        assert not source.startswith((".", "/")), f"only named volumes are mapped here: {spec}"
        fs.mount(target, volumes / source)
        (volumes / source).mkdir(parents=True, exist_ok=True)
        if "ro" in options:
            read_only.add(target)
    return fs, read_only


def map_listen(value: str, workers: int, fixed: bool = False) -> tuple[str, int]:
    """A container's listen address (all interfaces, a fixed port) as a local one: loopback, and
    any free port (port 0) unless the workers need a fixed one. Returns it and the container port."""
    host, _, port = value.rpartition(":")
    assert host in ("0.0.0.0", "[::]"), f"a container must listen on all interfaces, not {value}"  # noqa: S104
    local_port = 0
    if workers > 1 or fixed:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            local_port = s.getsockname()[1]
    return f"127.0.0.1:{local_port}", int(port)


def map_environment(env: Mapping[str, str], fs: Filesystem, database_url: str) -> tuple[dict[str, str], int]:
    """The container's environment with hosts, ports, paths and the database mapped to local
    ones; every other value is kept exactly. Returns it and the container's gRPC port."""
    mapped = dict(env)
    mapped["SECRETS_DATABASE_URL"] = database_url
    mapped["SECRETS_LISTEN"], port = map_listen(env["SECRETS_LISTEN"], int(env.get("SECRETS_WORKERS", "1")))
    if "SECRETS_METRICS_LISTEN" in env:
        mapped["SECRETS_METRICS_LISTEN"], _ = map_listen(env["SECRETS_METRICS_LISTEN"], 1, fixed=True)
    for name, value in env.items():
        if value.startswith("/"):  # a path in the container
            mapped[name] = str(fs.local(value))
    return mapped, port


def assert_scraped(mapped: Mapping[str, str], method: str) -> None:
    """The metrics endpoint the manifest configures answers, and has counted the calls made."""
    import urllib.request

    address = mapped["SECRETS_METRICS_LISTEN"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert f'grpc_method="{method}"' in text and "grpc_server_handled_total" in text


def assert_known(names: set[str], where: str) -> None:
    unknown = sorted(n for n in names if n.startswith("SECRETS_") and n not in known_settings())
    assert not unknown, f"{where} sets {unknown}, which service/config.py does not read"


async def check_serving(address: str, services: list[str]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        for name in services:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


async def save_and_resolve(address: str, tokens: Mapping[str, str], principals: Mapping[str, list[str]]) -> None:
    """One real round trip with the tokens the deployment's own step made."""

    def token(role: str) -> str:
        return tokens[next(name for name, roles in principals.items() if role in roles)]

    async with (
        DirectoryClient(address, token("directory")) as directory,
        EditorClient(address, token("editor")) as editor,
        ExecutorClient(address, token("executor")) as executor,
    ):
        await directory.put_member("ws-deploy", "u1", "u1@example.com", "admin")
        await editor.save("u1", "ws-deploy", expected_revision=0, set={"API_TOKEN": "deployed-value-1234"})
        resolution = await executor.resolve(
            "ws-deploy", {"b1": {"auth": "Bearer {{API_TOKEN}}"}}, trigger="manual", triggering_user_id="u1"
        )
    block = resolution.blocks["b1"]
    assert block.ok, block.error
    assert block.inputs == {"auth": "Bearer deployed-value-1234"}


def principal_roles(path: Path) -> dict[str, list[str]]:
    return {p["name"]: p["roles"] for p in json.loads(path.read_text())["principals"]}


def python_argv(argv: list[str]) -> list[str]:
    """A container's `python ...` command line run by this interpreter (the image's Python)."""
    assert argv[0] == "python", argv
    return [sys.executable, *argv[1:]]


def run(argv: list[str], *, cwd: Path = ROOT, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def server_processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.kill()


def test_compose_and_k8s_name_only_known_settings() -> None:
    deployment = k8s_documents()["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert_known({e["name"] for e in container["env"]}, "deploy/k8s/deployment.yaml")
    for name, service in compose()["services"].items():
        assert_known(set(compose_environment(service, {"POSTGRES_PASSWORD": "x"})), f"docker-compose.yml ({name})")
    assert_known(set(dockerfile_env()), "the Dockerfile")


# --- docker-compose.yml ---------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


async def test_compose_service_starts_with_its_environment(
    tmp_path: Path, fresh_database_url: str, server_processes: list[ServerProcess]
) -> None:
    document = compose()
    services = document["services"]
    postgres, init, server = services["postgres"], services["init"], services["secrets"]
    variables = {"POSTGRES_PASSWORD": "0123456789abcdef"}

    # The shape: Postgres 16 with a health check; the server waits for it and for init.
    assert str(postgres["image"]).startswith("postgres:16")
    assert postgres["healthcheck"]["test"]
    assert server["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "init": {"condition": "service_completed_successfully"},
    }
    assert server["build"] and server["image"] == init["image"]  # the image from the Dockerfile
    assert init.get("restart") == "no"
    declared = set(document["volumes"])

    # The init step, with its own command line, into local directories standing for the volumes.
    volumes = tmp_path / "volumes"
    init_fs, init_ro = compose_filesystem(init, volumes, tmp_path / "init-image")
    assert not init_ro, "init writes into its volumes"
    argv = python_argv([*init["entrypoint"], *init["command"]])
    argv[1:] = [str(init_fs.local(a)) if a.startswith("/") else a for a in argv[1:]]
    owner = argv.index("--owner") + 1
    assert argv[owner] == IMAGE_USER, "init gives its files to the server's user"
    argv[owner] = f"{os.getuid()}:{os.getgid()}"  # the local user stands for the image's
    first = run(argv)
    assert "wrote" in first and "token" in first
    tokens_file = Path(argv[argv.index("--tokens-file") + 1])
    tokens = json.loads(tokens_file.read_text())
    assert all(token not in first for token in tokens.values()), "init must not print a token"
    keyring_before = {p.name: p.read_bytes() for p in (volumes / "keys").iterdir()}
    again = run(argv)  # every `docker compose up` runs it again: it must keep what exists
    assert "kept" in again and "wrote" not in again
    assert {p.name: p.read_bytes() for p in (volumes / "keys").iterdir()} == keyring_before
    assert json.loads(tokens_file.read_text()) == tokens

    # The server's environment: the image's ENV, then the compose file's, exactly.
    server_fs, server_ro = compose_filesystem(server, volumes, tmp_path / "server-image")
    assert set(server_fs.mounts) <= {PurePosixPath(t) for t in server_ro}, "the server mounts its keys read-only"
    assert {spec.split(":")[0] for spec in [*init["volumes"], *server["volumes"]]} <= declared
    env = {**dockerfile_env(), **compose_environment(server, variables)}
    assert env["SECRETS_ENV"] == "production"
    database = urlsplit(env["SECRETS_DATABASE_URL"])
    assert database.hostname == "postgres" and (database.port or 5432) == 5432  # the compose service
    assert database.username == postgres["environment"]["POSTGRES_USER"]
    assert database.password == variables["POSTGRES_PASSWORD"]
    assert database.path == "/" + postgres["environment"]["POSTGRES_DB"]
    for name in ("SECRETS_KEYRING_FILE", "SECRETS_PRINCIPALS_FILE"):
        assert server_fs.local(env[name]).is_file(), f"{name}={env[name]} is not a file init made"
    mapped, port = map_environment(env, server_fs, fresh_database_url)
    assert any(str(p).endswith(f":{port}") for p in server["ports"]), "the published port is the one served"

    process = ServerProcess(mapped, tmp_path / "compose-server.log")
    server_processes.append(process)

    # The compose health check, as the engine runs it inside the container (which has the
    # server's environment; only the address differs here).
    check = server["healthcheck"]["test"]
    assert check[0] == "CMD"
    probe_env = {k: v for k, v in os.environ.items() if not k.startswith("SECRETS_")}
    probe_env |= {**mapped, "SECRETS_LISTEN": process.address}
    assert "SERVING" in run(python_argv(check[1:]), env=probe_env)
    await check_serving(process.address, [""])
    await save_and_resolve(process.address, tokens, principal_roles(server_fs.local(env["SECRETS_PRINCIPALS_FILE"])))
    assert_scraped(mapped, "ResolveInputs")

    log = process.log()
    assert process.terminate() == 0
    assert all(token not in log for token in tokens.values())


# --- deploy/k8s -------------------------------------------------------------------------------


def k8s_documents() -> dict[str, dict[str, Any]]:
    """The resources kustomization.yaml lists, by kind (one of each)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S / resource).read_text()):
            assert document["kind"] not in found, document["kind"]
            found[document["kind"]] = document
    return found


def documented_commands() -> list[list[str]]:
    """The commands kustomization.yaml's comment gives for making the Secrets (its indented lines)."""
    lines = [line[4:] for line in (K8S / "kustomization.yaml").read_text().splitlines() if line.startswith("#   ")]
    text = "\n".join(lines).replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines()]


def make_secrets(workdir: Path, database_url: str) -> dict[str, dict[str, bytes]]:
    """Runs the documented commands: the bootstrap for real, `kubectl create secret generic` as
    the Secrets' contents (the database URL's is mapped to the local database)."""
    secrets: dict[str, dict[str, bytes]] = {}
    commands = documented_commands()
    assert [c[:2] for c in commands] == [["python", "-m"]] + [["kubectl", "create"]] * 3, commands
    for argv in commands:
        if argv[0] == "python":
            run(python_argv(argv), cwd=workdir)
            continue
        assert argv[1:4] == ["create", "secret", "generic"], argv
        name, data = argv[4], {}
        for option in argv[5:]:
            kind, _, spec = option.partition("=")
            key, _, value = spec.partition("=")
            if kind == "--from-file":
                data[key] = (workdir / value).read_bytes()
            else:
                assert kind == "--from-literal" and key == "url", option
                assert urlsplit(value).scheme == "postgresql", value
                data[key] = database_url.encode()
        secrets[name] = data
    return secrets


async def test_k8s_deployment_starts_with_its_environment(
    tmp_path: Path, fresh_database_url: str, server_processes: list[ServerProcess]
) -> None:
    documents = k8s_documents()
    deployment, service, budget = documents["Deployment"], documents["Service"], documents["PodDisruptionBudget"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2 and budget["spec"]["maxUnavailable"] == 1

    (container,) = pod["containers"]
    context = {**pod["securityContext"], **container["securityContext"]}
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert container["livenessProbe"]["grpc"] == {"port": ports["grpc"], "service": ""}
    assert container["readinessProbe"]["grpc"] == {"port": ports["grpc"], "service": "secrets.v1.Resolver"}

    # The Secrets, made as documented, and the pod's volumes as directories.
    workdir = tmp_path / "operator"
    workdir.mkdir()
    secrets = make_secrets(workdir, fresh_database_url)
    fs = Filesystem(tmp_path / "image")
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        local = tmp_path / "pod" / mount["name"]
        local.mkdir(parents=True)
        fs.mount(mount["mountPath"], local)
        if "secret" in volume:
            assert mount.get("readOnly") is True and "subPath" not in mount, mount
            data = secrets[volume["secret"]["secretName"]]
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (local / item["path"]).write_bytes(data[item["key"]])
        else:
            assert "emptyDir" in volume, volume

    # The container's environment: the image's ENV, then the Deployment's, values from Secrets.
    env = dockerfile_env()
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"]][ref["key"]].decode()
    assert env["SECRETS_ENV"] == "production"
    assert env["SECRETS_DATABASE_URL"] == fresh_database_url  # it came from the database Secret
    for name in ("SECRETS_KEYRING_FILE", "SECRETS_PRINCIPALS_FILE"):
        local = fs.local(env[name])
        assert local.is_file() and (tmp_path / "pod") in local.parents, f"{name} is not in a mounted Secret"
    mapped, port = map_environment(env, fs, fresh_database_url)
    assert port == ports["grpc"]

    process = ServerProcess(mapped, tmp_path / "k8s-server.log")
    server_processes.append(process)
    probes = [container[p]["grpc"].get("service", "") for p in ("startupProbe", "livenessProbe", "readinessProbe")]
    await check_serving(process.address, probes)
    tokens = json.loads((workdir / "tokens.json").read_text())
    await save_and_resolve(process.address, tokens, principal_roles(fs.local(env["SECRETS_PRINCIPALS_FILE"])))
    assert ports["metrics"] == int(env["SECRETS_METRICS_LISTEN"].rpartition(":")[2])
    assert_scraped(mapped, "ResolveInputs")
    assert process.terminate() == 0

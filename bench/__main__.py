"""`make bench`: the service's figures, measured as ratios within one run.

Starts the server (`python -m service`, its own process) on the embedded Postgres or on
SECRETS_BENCH_DATABASE_URL, seeds it, and drives it from a separate load process (bench/load.py)
over several grpc.aio channels. Resolve and an empty call (the health check) alternate in rounds,
so both see the same machine weather. Prints a table and writes bench/results/latest.json.

Environment: BENCH_ROUNDS (default 5), BENCH_SECONDS per round and mode (default 3),
BENCH_CONCURRENCY (default 32), BENCH_BIG (stored secrets for the large phase, default 1,000,000),
SECRETS_BENCH_DATABASE_URL (a Postgres admin URL; a fresh database is created in it).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import secrets as pysecrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from secrets_client import DirectoryClient, EditorClient
from secrets_client.grants import OrchestratorClient

from bench import observer
from bench.otlp_sink import OtlpSink
from bench.progress import Progress
from service.auth import hash_token
from service.crypto.keyring import new_keyring_document, write_private_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
BIG = int(os.environ.get("BENCH_BIG", "1000000"))
SMALL = 1000
WS, USER = "bench-ws", "bench-user"
TARGETS = {
    # Issue 15: resolve at the gRPC floor.
    "resolve_throughput_ratio_min": 0.75,
    "resolve_p99_ratio_max": 2.0,
    "p50_growth_1m_over_1k_max": 1.2,
    "import_10k_seconds_max": 3.0,
    "server_peak_rss_mib_max": 150.0,
    # The resolve throughput ratio with a run grant may be at most this far below the one without.
    "grant_ratio_drop_max": 0.05,
    # ...and with metrics on (SECRETS_METRICS_LISTEN), at most this far below the one with them off.
    "metrics_ratio_drop_max": 0.03,
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Postgres:
    """An admin URL: the given one, or an embedded pgserver in a temporary directory."""

    def __init__(self) -> None:
        self._server: Any = None
        self.created: list[str] = []
        given = os.environ.get("SECRETS_BENCH_DATABASE_URL")
        if given:
            self.admin_url = given
            self.kind = "given Postgres"
        else:
            import pgserver

            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                Path(tempfile.mkdtemp(prefix="sst-bench-")) / "pg", cleanup_mode="delete"
            )
            self.admin_url = str(self._server.get_uri())
            self.kind = "embedded Postgres 16 (pgserver)"

    async def fresh_database(self) -> str:
        name = "secrets_bench_" + uuid.uuid4().hex[:8]
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        parts = self.admin_url.split("?", 1)
        base = parts[0].rsplit("/", 1)[0] + "/" + name
        return base + ("?" + parts[1] if len(parts) > 1 else "")

    async def drop_created(self) -> None:
        """Drops the databases this run made (a given server keeps no leftovers)."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()


def start_server(
    database_url: str,
    root: Path,
    tokens: dict[str, str],
    workers: int = 1,
    cache_entries: int = 10_000,
    keyring: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Starts `python -m service` on `database_url`; a server beside another on the same database
    passes that one's `keyring` (a database refuses a master key whose material changed). Metrics
    and traces are off unless `extra_env` turns them on."""
    root.mkdir(parents=True, exist_ok=True)
    if keyring is None:
        keyring = root / "keyring.json"
        write_private_json(keyring, new_keyring_document(["bench1"]))
    principals = root / "principals.json"
    write_private_json(
        principals,
        {
            "principals": [
                {"name": f"bench-{r}", "roles": [r], "token_sha256": hash_token(t)} for r, t in tokens.items()
            ]
        },
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRETS_", "OTEL_", "PROMETHEUS_"))}
    env.update(
        SECRETS_LISTEN="127.0.0.1:0" if workers == 1 else f"127.0.0.1:{free_port()}",
        SECRETS_DATABASE_URL=database_url,
        SECRETS_KEYRING_FILE=str(keyring),
        SECRETS_PRINCIPALS_FILE=str(principals),
        SECRETS_DATA_DIR=str(root / "data"),
        SECRETS_LOG_LEVEL="INFO",
        SECRETS_WORKERS=str(workers),
        SECRETS_RESOLVE_CACHE_ENTRIES=str(cache_entries),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    log = open(root / "server.log", "wb")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"serving secrets\.v1 on ([\d.]+:\d+)", (root / "server.log").read_text(errors="replace"))
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError("server did not start:\n" + (root / "server.log").read_text(errors="replace"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Loader:
    def __init__(self, address: str, token: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.load", address, token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )

    def run(self, mode: str, seconds: float, request: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        command = {"mode": mode, "seconds": seconds, "concurrency": CONCURRENCY, "request": request or {}}
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(30)


def resolve_request() -> dict[str, Any]:
    """2 blocks, 10 references: 5 to workspace secrets, 5 that fall back to personal ones."""
    return {
        "workspaceId": WS,
        "workflowId": "wf-bench",
        "executionId": "exec-bench",
        "trigger": "TRIGGER_MANUAL",
        "triggeringUserId": USER,
        "blocks": [
            {
                "blockId": "http",
                "inputs": {
                    "url": "https://api.example.com/{{W0}}",
                    "headers": {"Authorization": "Bearer {{W1}}", "X-Key": "{{W2}}"},
                    "body": {"user": "{{P0}}", "password": "{{P1}}"},
                },
            },
            {
                "blockId": "llm",
                "inputs": {
                    "api_key": "{{W3}}",
                    "messages": [{"role": "system", "content": "org {{W4}}"}, {"content": "{{P2}} {{P3}}"}],
                    "extra": "{{P4}}",
                    "temperature": 0.2,
                },
            },
        ],
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, float]:
    latencies = [x for r in results for x in r["latencies_ms"]]
    calls = sum(r["calls"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    return {
        "calls": calls,
        "errors": sum(r["errors"] for r in results),
        "throughput_rps": calls / seconds if seconds else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


def interleaved(
    loader: Loader, rounds: int, seconds: float, label: str = "measuring"
) -> tuple[dict[str, float], dict[str, float]]:
    progress = Progress(label, rounds, "rounds")
    loader.run("health", 1.0)  # warm-up: connections, statement caches, data-key cache
    loader.run("resolve", 1.0, resolve_request())
    health: list[dict[str, Any]] = []
    resolve: list[dict[str, Any]] = []
    for i in range(rounds):
        # Alternate which goes first, so neither always follows the other.
        order = ("health", "resolve") if i % 2 == 0 else ("resolve", "health")
        for mode in order:
            result = loader.run(mode, seconds, resolve_request() if mode == "resolve" else None)
            (health if mode == "health" else resolve).append(result)
        progress.update(i + 1)  # between rounds, outside every measured call
    progress.finish(rounds)
    return summarize(health), summarize(resolve)


def interleaved_with_grant(
    loader: Loader, rounds: int, seconds: float, grant: str, label: str = "measuring"
) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, float]]:
    """`interleaved`, with two more modes: the same resolve carrying a run grant (the request also
    repeats the grant's run, so every field is compared), and the same resolve with blocks the
    server has never seen (each call another `temperature`: bench/load.py resolve-fresh, so every
    call takes the ordinary path). The order rotates every round."""
    granted_request = {**resolve_request(), "grant": grant}
    progress = Progress(label, rounds, "rounds")
    loader.run("health", 1.0)
    loader.run("resolve", 1.0, resolve_request())
    loader.run("resolve", 1.0, granted_request)
    modes = {"health": None, "resolve": resolve_request(), "granted": granted_request, "fresh": resolve_request()}
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    names = list(modes)
    for i in range(rounds):
        for mode in names[i % len(names) :] + names[: i % len(names)]:
            request = modes[mode]
            kind = "health" if request is None else "resolve-fresh" if mode == "fresh" else "resolve"
            results[mode].append(loader.run(kind, seconds, request))
        progress.update(i + 1)  # between rounds, outside every measured call
    progress.finish(rounds)
    return (
        summarize(results["health"]),
        summarize(results["resolve"]),
        summarize(results["granted"]),
        summarize(results["fresh"]),
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def interleaved_configs(
    loaders: dict[str, Loader],
    rounds: int,
    seconds: float,
    label: str = "measuring",
    pids: dict[str, int] | None = None,
) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """`interleaved` over several servers at once: every round measures each server's health and
    resolve, the servers in an order that rotates, so all of them see the same machine weather.
    With `pids`, each summary also has the server's CPU time per call (`server_cpu_us_per_call`),
    which other work on the machine changes less than throughput."""
    progress = Progress(label, rounds, "rounds")
    for each in loaders.values():
        each.run("health", 1.0)
        each.run("resolve", 1.0, resolve_request())
    names = list(loaders)
    health: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    resolve: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    cpu: dict[tuple[str, str], float] = {}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            for mode in ("health", "resolve") if i % 2 == 0 else ("resolve", "health"):
                before = cpu_seconds(pids[name]) if pids else 0.0
                result = loaders[name].run(mode, seconds, resolve_request() if mode == "resolve" else None)
                if pids:
                    cpu[name, mode] = cpu.get((name, mode), 0.0) + cpu_seconds(pids[name]) - before
                (health if mode == "health" else resolve)[name].append(result)
        progress.update(i + 1)  # between rounds, outside every measured call
    progress.finish(rounds)
    summaries = {name: (summarize(health[name]), summarize(resolve[name])) for name in names}
    for (name, mode), used in cpu.items():
        summary = summaries[name][0 if mode == "health" else 1]
        summary["server_cpu_us_per_call"] = 1e6 * used / max(summary["calls"], 1)
    return summaries


def scraped_resolves(metrics_port: int) -> float:
    """ResolveInputs calls answered OK, as the metered server's /metrics counts them."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels.get("grpc_method") == "ResolveInputs"
        and sample.labels.get("grpc_code") == "OK"
    )


async def observability_cost(
    database_url: str, root: Path, tokens: dict[str, str], baseline: Loader, baseline_pid: int
) -> dict[str, Any]:
    """The default server (metrics and traces off) beside one with SECRETS_METRICS_LISTEN and one
    tracing every call to a local OTLP/HTTP endpoint, measured in the same rounds."""
    sink = OtlpSink()
    metrics_port = free_port()
    keyring = root / "cached" / "keyring.json"
    metered, metered_address = start_server(
        database_url,
        root / "metered",
        tokens,
        keyring=keyring,
        extra_env={"SECRETS_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"},
    )
    traced, traced_address = start_server(
        database_url,
        root / "traced",
        tokens,
        keyring=keyring,
        extra_env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_SERVICE_NAME": "secrets-bench",
        },
    )
    extra = {
        "metrics": Loader(metered_address, tokens["executor"]),
        "tracing": Loader(traced_address, tokens["executor"]),
    }
    try:
        pids = {"off": baseline_pid, "metrics": metered.pid, "tracing": traced.pid}
        measured = interleaved_configs({"off": baseline, **extra}, ROUNDS, SECONDS, "  metrics and traces", pids)
        counted = scraped_resolves(metrics_port)
    finally:
        for each in extra.values():
            each.close()
        for server in (metered, traced):
            server.terminate()  # the traced server exports what it still holds as it stops
            server.wait(30)
        sink.close()
    ratios = {name: r["throughput_rps"] / h["throughput_rps"] for name, (h, r) in measured.items()}
    return {
        "observer_us_per_call": await asyncio.to_thread(observer.measure),  # a loop of its own
        "health": {name: h for name, (h, _) in measured.items()},
        "resolve": {name: r for name, (_, r) in measured.items()},
        "ratios": ratios,
        "metrics_ratio_drop": ratios["off"] - ratios["metrics"],
        "tracing_ratio_drop": ratios["off"] - ratios["tracing"],
        "resolves_counted_by_metrics": counted,
        "span_export_requests": sink.requests,
        "span_export_bytes": sink.bytes,
    }


async def issue_grant(address: str, tokens: dict[str, str]) -> str:
    """A run grant for the benchmark's run (resolve_request), valid for the longest time."""
    request = resolve_request()
    async with OrchestratorClient(address, tokens["orchestrator"]) as orchestrator:
        grant = await orchestrator.issue_grant(
            WS, request["workflowId"], request["executionId"], triggering_user_id=USER, ttl_seconds=86400
        )
    return str(grant.token)


async def seed(address: str, tokens: dict[str, str]) -> None:
    async with (
        DirectoryClient(address, tokens["directory"]) as directory,
        EditorClient(address, tokens["editor"]) as editor,
    ):
        await directory.put_member(WS, USER, "bench@example.com", "admin")
        await editor.save(USER, WS, expected_revision=0, set={f"W{i}": pysecrets.token_urlsafe(24) for i in range(5)})
        await editor.save(
            USER,
            WS,
            scope="personal",
            expected_revision=0,
            set={f"P{i}": pysecrets.token_urlsafe(24) for i in range(5)},
        )


async def fill(database_url: str, total: int) -> int:
    """Adds stored secrets in other workspaces until the table holds `total`. They are sealed-size
    random bytes: the resolve never opens them, it must only not be slowed by them."""
    conn = await asyncpg.connect(database_url)
    try:
        have = int(await conn.fetchval("SELECT count(*) FROM secrets"))
        need = total - have
        batch = 100_000
        made = 0
        progress = Progress("  filling", max(need, 0), "secrets")
        while made < need:
            n = min(batch, need - made)
            start = have + made  # keeps names unique across calls
            records = [
                (1, f"filler-ws-{j // 100}", f"KEY_{j}", 1, os.urandom(60), "filler", "filler")
                for j in range(start, start + n)
            ]
            await conn.copy_records_to_table(
                "secrets",
                records=records,
                columns=["scope", "owner_id", "key", "version", "sealed", "created_by", "updated_by"],
            )
            made += n
            progress.update(made)
        progress.finish(max(made, 0))
        await conn.execute("ANALYZE secrets")
        return int(await conn.fetchval("SELECT count(*) FROM secrets"))
    finally:
        await conn.close()


async def time_import(address: str, tokens: dict[str, str]) -> float:
    text = "".join(f"IMPORTED_{i:05d}={pysecrets.token_urlsafe(18)}\n" for i in range(10_000))
    async with EditorClient(address, tokens["editor"], timeout=120) as editor:
        listing = await editor.list_secrets(USER, WS)
        start = time.perf_counter()
        reply = await editor.import_dotenv(USER, WS, text, expected_revision=listing.workspace_revision)
        elapsed = time.perf_counter() - start
    assert len(reply.entries) == 10_000 and not reply.problems
    return elapsed


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def report(data: dict[str, Any]) -> str:
    small_h, small_r = data["small"]["health"], data["small"]["resolve"]
    big_h, big_r = data["big"]["health"], data["big"]["resolve"]
    ratios = data["ratios"]
    un = data["uncached"]
    obs = data["observability"]
    lines = [
        f"machine: {data['machine']['cpus']} CPUs, {data['machine']['cpu_model']}, Python {data['machine']['python']}",
        f"database: {data['database']}; load: {CONCURRENCY} in flight over 4 channels from a separate process;"
        f" {ROUNDS} interleaved rounds of {SECONDS:g}s per mode",
        "",
        "| measure | health check (empty call) | ResolveInputs (2 blocks, 10 refs) | ratio | target |",
        "|---|---|---|---|---|",
        f"| throughput, {data['small']['stored']:,} stored | {fmt(small_h['throughput_rps'], 0)}/s |"
        f" {fmt(small_r['throughput_rps'], 0)}/s | {fmt(ratios['resolve_throughput_ratio'])} | >= 0.75 |",
        f"| p50 latency, {data['small']['stored']:,} stored | {fmt(small_h['p50_ms'])} ms | {fmt(small_r['p50_ms'])} ms |"
        f" {fmt(small_r['p50_ms'] / small_h['p50_ms'])} | |",
        f"| p99 latency, {data['small']['stored']:,} stored | {fmt(small_h['p99_ms'])} ms | {fmt(small_r['p99_ms'])} ms |"
        f" {fmt(ratios['resolve_p99_ratio'])} | <= 2.0 |",
        f"| throughput, {data['big']['stored']:,} stored | {fmt(big_h['throughput_rps'], 0)}/s |"
        f" {fmt(big_r['throughput_rps'], 0)}/s | {fmt(big_r['throughput_rps'] / big_h['throughput_rps'])} | |",
        f"| p50 latency, {data['big']['stored']:,} stored | {fmt(big_h['p50_ms'])} ms | {fmt(big_r['p50_ms'])} ms |"
        f" {fmt(big_r['p50_ms'] / big_h['p50_ms'])} | |",
        f"| resolve p50 growth, {data['big']['stored']:,} over {data['small']['stored']:,} stored"
        f" (each relative to its health p50) | | | {fmt(ratios['p50_growth_1m_over_1k'])} | <= 1.2 |",
        f"| same, resolve cache off (every resolve reads Postgres) | | | {fmt(un['ratios']['p50_growth_1m_over_1k'])} | |",
        f"| resolve throughput ratio, cache off, {data['small']['stored']:,} / {data['big']['stored']:,} stored | | |"
        f" {fmt(un['ratios']['resolve_throughput_ratio'])} / {fmt(un['ratios']['big_throughput_ratio'])} | |",
        f"| resolve throughput ratio with a run grant (without: {fmt(ratios['resolve_throughput_ratio'])}),"
        f" {data['small']['stored']:,} stored | | {fmt(data['small']['granted']['throughput_rps'], 0)}/s |"
        f" {fmt(ratios['granted_throughput_ratio'])} | within 0.05 |",
        f"| resolve throughput ratio, first-seen requests (blocks never sent before: the ordinary path),"
        f" {data['small']['stored']:,} stored | | {fmt(data['small']['fresh']['throughput_rps'], 0)}/s |"
        f" {fmt(ratios['fresh_throughput_ratio'])} | |",
        f"| p99 latency, first-seen requests | | {fmt(data['small']['fresh']['p99_ms'])} ms |"
        f" {fmt(data['small']['fresh']['p99_ms'] / small_h['p99_ms'])} | |",
        f"| resolve throughput ratio, metrics off (default) / on, {data['small']['stored']:,} stored |"
        f" {fmt(obs['health']['off']['throughput_rps'], 0)}/s / {fmt(obs['health']['metrics']['throughput_rps'], 0)}/s |"
        f" {fmt(obs['resolve']['off']['throughput_rps'], 0)}/s / {fmt(obs['resolve']['metrics']['throughput_rps'], 0)}/s |"
        f" {fmt(obs['ratios']['off'])} / {fmt(obs['ratios']['metrics'])} | drop <= 0.03 |",
        f"| resolve throughput ratio, tracing on (every call, OTLP/HTTP to a local endpoint) |"
        f" {fmt(obs['health']['tracing']['throughput_rps'], 0)}/s | {fmt(obs['resolve']['tracing']['throughput_rps'], 0)}/s |"
        f" {fmt(obs['ratios']['tracing'])} | |",
        f"| server CPU per call, metrics off / on | {fmt(obs['health']['off']['server_cpu_us_per_call'], 0)} /"
        f" {fmt(obs['health']['metrics']['server_cpu_us_per_call'], 0)} us | {fmt(obs['resolve']['off']['server_cpu_us_per_call'], 0)} /"
        f" {fmt(obs['resolve']['metrics']['server_cpu_us_per_call'], 0)} us | | |",
        f"| server CPU per call, tracing on | {fmt(obs['health']['tracing']['server_cpu_us_per_call'], 0)} us |"
        f" {fmt(obs['resolve']['tracing']['server_cpu_us_per_call'], 0)} us | | |",
        "| tracing off (the default): nothing of OpenTelemetry is imported or installed; it is the"
        " 'off' server above | | | | |",
        "| the call observer's CPU per call, in-process: "
        + ", ".join(f"{name} {fmt(cost, 1)} us" for name, cost in obs["observer_us_per_call"].items())
        + " | | | | |",
        f"| 10,000-line .env import | | {fmt(data['import_10k_seconds'])} s | | < 3 s |",
        f"| server peak RSS, {data['big']['stored']:,} stored | | {fmt(data['server_peak_rss_mib'], 1)} MiB | | < 150 MiB |",
        "",
        "targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in data["targets_met"].items()),
        f"errors: health {small_h['errors'] + big_h['errors']}, resolve {small_r['errors'] + big_r['errors']},"
        f" resolve with a grant {data['small']['granted']['errors']},"
        f" first-seen resolve {data['small']['fresh']['errors']}",
    ]
    return "\n".join(lines)


def phase_ratios(
    small: tuple[dict[str, float], dict[str, float]], big: tuple[dict[str, float], dict[str, float]]
) -> dict[str, float]:
    (sh, sr), (bh, br) = small, big
    return {
        "resolve_throughput_ratio": sr["throughput_rps"] / sh["throughput_rps"],
        "big_throughput_ratio": br["throughput_rps"] / bh["throughput_rps"],
        "resolve_p99_ratio": sr["p99_ms"] / sh["p99_ms"],
        # Each phase's resolve p50 is taken relative to its own health p50, so a machine that got
        # slower (or faster) between the phases does not pass for growth.
        "p50_growth_1m_over_1k": (br["p50_ms"] / bh["p50_ms"]) / (sr["p50_ms"] / sh["p50_ms"]),
        "p50_raw_1m_over_1k": br["p50_ms"] / sr["p50_ms"],
    }


async def main() -> int:
    tokens = {r: pysecrets.token_urlsafe(24) for r in ("editor", "executor", "directory", "ops", "orchestrator")}
    postgres = Postgres()
    root = Path(tempfile.mkdtemp(prefix="sst-bench-run-"))
    servers: list[subprocess.Popen[bytes]] = []
    loaders: list[Loader] = []
    try:
        database_url = await postgres.fresh_database()
        # The default configuration (resolve cache on) and, beside it on the same database, one
        # with the cache off, so the database path is measured too.
        server, address = start_server(database_url, root / "cached", tokens)
        servers.append(server)
        uncached_server, uncached_address = start_server(
            database_url, root / "uncached", tokens, cache_entries=0, keyring=root / "cached" / "keyring.json"
        )
        servers.append(uncached_server)
        await seed(address, tokens)
        stored_small = await fill(database_url, SMALL)
        loader, uncached_loader = Loader(address, tokens["executor"]), Loader(uncached_address, tokens["executor"])
        loaders += [loader, uncached_loader]
        grant = await issue_grant(address, tokens)
        print(f"phase 1: {stored_small:,} stored secrets (resolves with and without a run grant)", file=sys.stderr)
        *small_pair, granted, fresh = interleaved_with_grant(loader, ROUNDS, SECONDS, grant, "  resolve cache on")
        small = (small_pair[0], small_pair[1])
        small_uncached = interleaved(uncached_loader, ROUNDS, SECONDS, "  resolve cache off")
        print("phase 1b: metrics on, traces on, beside the default (both off)", file=sys.stderr)
        observability = await observability_cost(database_url, root, tokens, loader, server.pid)
        print("phase 2: 10,000-line import", file=sys.stderr)
        import_seconds = await time_import(address, tokens)
        print(f"phase 3: filling to {BIG:,} stored secrets", file=sys.stderr)
        stored_big = await fill(database_url, BIG)
        big = interleaved(loader, ROUNDS, SECONDS, "  resolve cache on")
        big_uncached = interleaved(uncached_loader, ROUNDS, SECONDS, "  resolve cache off")
        rss = peak_rss_mib(server.pid)
        ratios = phase_ratios(small, big)
        ratios["granted_throughput_ratio"] = granted["throughput_rps"] / small[0]["throughput_rps"]
        ratios["fresh_throughput_ratio"] = fresh["throughput_rps"] / small[0]["throughput_rps"]
        uncached = {
            "small": {"health": small_uncached[0], "resolve": small_uncached[1]},
            "big": {"health": big_uncached[0], "resolve": big_uncached[1]},
            "ratios": phase_ratios(small_uncached, big_uncached),
            "server_peak_rss_mib": peak_rss_mib(uncached_server.pid),
        }
        data = {
            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine(),
            "database": postgres.kind,
            "settings": {"rounds": ROUNDS, "seconds": SECONDS, "concurrency": CONCURRENCY, "channels": 4},
            "small": {
                "stored": stored_small,
                "health": small[0],
                "resolve": small[1],
                "granted": granted,
                "fresh": fresh,
            },
            "big": {"stored": stored_big, "health": big[0], "resolve": big[1]},
            "uncached": uncached,
            "observability": observability,
            "import_10k_seconds": import_seconds,
            "server_peak_rss_mib": rss,
            "ratios": ratios,
            "targets_met": {
                "resolve_throughput": ratios["resolve_throughput_ratio"] >= TARGETS["resolve_throughput_ratio_min"],
                "resolve_p99": ratios["resolve_p99_ratio"] <= TARGETS["resolve_p99_ratio_max"],
                "p50_flat_with_data": ratios["p50_growth_1m_over_1k"] <= TARGETS["p50_growth_1m_over_1k_max"],
                "import_10k": import_seconds < TARGETS["import_10k_seconds_max"],
                "server_memory": rss < TARGETS["server_peak_rss_mib_max"],
                "grant_overhead": ratios["resolve_throughput_ratio"] - ratios["granted_throughput_ratio"]
                <= TARGETS["grant_ratio_drop_max"],
                "metrics_overhead": observability["metrics_ratio_drop"] <= TARGETS["metrics_ratio_drop_max"],
            },
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
        print(report(data))
        print(f"\nwrote {RESULTS / 'latest.json'}")
        return 0
    finally:
        for each_loader in loaders:
            each_loader.close()
        for each_server in servers:
            each_server.terminate()
            each_server.wait(30)
        await postgres.drop_created()
        postgres.close()
        # The servers' logs (an access line per call: tens of MB) and keys go with the run.
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

"""The gRPC floor for ResolveInputs: a stub server answering every ResolveInputs with a prebuilt
response of the benchmark's size, doing no work. `python -m bench.echo` prints the stub's resolve
throughput over its health check throughput, measured the same way as `make bench`; the
difference between that ratio and the real service's is the service's own work per call.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.__main__ import CONCURRENCY, ROOT, resolve_request
from service.gen.secrets.v1 import resolver_pb2, resolver_pb2_grpc


class EchoResolver(resolver_pb2_grpc.ResolverServicer):
    def __init__(self) -> None:
        request = json_format.ParseDict(resolve_request(), resolver_pb2.ResolveInputsRequest())
        self.response = resolver_pb2.ResolveInputsResponse(run_user_id=request.triggering_user_id)
        for block in request.blocks:
            result = self.response.blocks.add(block_id=block.block_id)
            result.inputs.CopyFrom(block.inputs)
            for _ in range(5):
                result.references.add(field_path="headers.Authorization", key="W1", scope=1, version=1)

    async def ResolveInputs(self, request: Any, context: Any) -> resolver_pb2.ResolveInputsResponse:
        return self.response

    async def IssueRunGrant(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the echo server")

    async def RevokeRunGrant(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the echo server")

    async def EndRun(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the echo server")


async def main() -> None:
    server = grpc.aio.server()
    resolver_pb2_grpc.add_ResolverServicer_to_server(EchoResolver(), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    loader = subprocess.Popen(  # noqa: ASYNC220 (started once, before any measuring)
        [sys.executable, "-m", "bench.load", f"127.0.0.1:{port}", "unused"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert loader.stdin and loader.stdout

    async def run(mode: str) -> float:
        command = {"mode": mode, "seconds": 3, "concurrency": CONCURRENCY, "request": resolve_request()}
        assert loader.stdin and loader.stdout
        loader.stdin.write((json.dumps(command) + "\n").encode())
        loader.stdin.flush()
        line = await asyncio.to_thread(loader.stdout.readline)
        result = json.loads(line)
        return float(result["calls"]) / float(result["seconds"])

    await run("health")
    for _ in range(3):
        health_rps, echo_rps = await run("health"), await run("resolve")
        print(f"health {health_rps:,.0f}/s  echo ResolveInputs {echo_rps:,.0f}/s  ratio {echo_rps / health_rps:.2f}")
    loader.stdin.close()
    loader.wait(30)
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main())

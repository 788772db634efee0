"""The load generator: a separate process that drives the server with grpc.aio over several
channels. It reads one JSON command per line on stdin and answers one JSON line per command:

    {"mode": "health" | "resolve" | "resolve-fresh", "seconds": 3.0, "concurrency": 32, "request": {...}}
    -> {"mode": ..., "calls": n, "errors": e, "seconds": s, "latencies_ms": [...sampled...]}

`resolve-fresh` sends the request with blocks the server has never seen: each call's number
`temperature` (a double) is another, so every call's blocks are new bytes of the same size.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
import sys
import time
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from secrets_client.gen.secrets.v1 import resolver_pb2, resolver_pb2_grpc

CHANNELS = 4


async def run(command: dict[str, Any], channels: list[grpc.aio.Channel], token: str) -> dict[str, Any]:
    mode = command["mode"]
    seconds = float(command["seconds"])
    concurrency = int(command["concurrency"])
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
    if mode == "resolve":
        request = json_format.ParseDict(command["request"], resolver_pb2.ResolveInputsRequest())
        stubs: list[Any] = [resolver_pb2_grpc.ResolverStub(c).ResolveInputs for c in channels]
    elif mode == "resolve-fresh":
        request = fresh_requests(command["request"])
        stubs = [
            c.unary_unary(
                "/secrets.v1.Resolver/ResolveInputs",
                request_serializer=next,  # each call its own bytes
                response_deserializer=resolver_pb2.ResolveInputsResponse.FromString,
            )
            for c in channels
        ]
    else:
        request = health_pb2.HealthCheckRequest()
        stubs = [health_pb2_grpc.HealthStub(c).Check for c in channels]
        metadata = ()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal errors
        call = stubs[i % len(stubs)]
        while True:
            start = time.perf_counter()
            if start >= deadline:
                return
            try:
                reply = await call(request, metadata=metadata, timeout=10)
                if mode != "health" and any(b.HasField("error") for b in reply.blocks):
                    errors += 1
            except grpc.aio.AioRpcError:
                errors += 1
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "mode": mode,
        "calls": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "latencies_ms": [round(x * 1000, 4) for x in latencies],
    }


def fresh_requests(request: dict[str, Any]) -> Any:
    """Serialized requests like `request`, each with another `temperature` (same size)."""
    message = json_format.ParseDict(request, resolver_pb2.ResolveInputsRequest())
    marker = 0.123456789
    (block,) = [b for b in message.blocks if "temperature" in b.inputs.fields]
    block.inputs["temperature"] = marker
    data = message.SerializeToString()
    head, tail = data.split(struct.pack("<d", marker))
    return (head + struct.pack("<d", n + 0.5) + tail for n in itertools.count())


async def main() -> None:
    target, token = sys.argv[1], sys.argv[2]
    channels = [
        # Distinct channel args keep gRPC from sharing one subchannel (one TCP connection) among them.
        grpc.aio.insecure_channel(target, options=[("grpc.channel_id", i)])
        for i in range(CHANNELS)
    ]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        result = await run(json.loads(line), channels, token)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    for c in channels:
        await c.close(None)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())

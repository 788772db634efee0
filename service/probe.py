"""`python -m service.probe`: one gRPC health check (grpc.health.v1), exit 0 if SERVING, else 1.

For a container health check where no `grpc_health_probe` or `grpcurl` is installed (the image
has only Python and the service):

    python -m service.probe                                # liveness: the overall name ""
    python -m service.probe --service secrets.v1.Resolver  # readiness of the resolver

The address defaults to SECRETS_LISTEN with a wildcard host (0.0.0.0, ::) replaced by loopback,
so inside the server's container it needs no argument. Plaintext only, like Kubernetes' own gRPC
probe. Prints one line: the status, or why there is none.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_LISTEN = "127.0.0.1:50051"


def local_address(listen: str) -> str:
    """Where to reach a server that listens on `listen` from the same host."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):  # noqa: S104 (a listen address read, not bound)
        host = "127.0.0.1"
    return f"{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.probe", description="One gRPC health check: exit 0 if SERVING, else 1."
    )
    parser.add_argument(
        "--address",
        default=None,
        help="host:port (default: SECRETS_LISTEN, wildcard host as 127.0.0.1, else 127.0.0.1:50051)",
    )
    parser.add_argument("--service", default="", help='health service name (default "": liveness)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    opts = parser.parse_args(argv)
    address = opts.address or local_address(os.environ.get("SECRETS_LISTEN", "").strip() or DEFAULT_LISTEN)

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=opts.service), timeout=opts.timeout
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            print(f"{address} {opts.service!r}: {code.name if code else type(exc).__name__}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address} {opts.service!r}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main())

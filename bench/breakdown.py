"""Where resolve time goes: `python -m bench.breakdown` runs the benchmark's server and load
generator and compares, against the health check, three ResolveInputs requests that differ only
in what the service must do: no blocks, the benchmark's blocks with their references turned
into plain text, and the benchmark's request itself (10 references)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets as pysecrets
import tempfile
from pathlib import Path
from typing import Any

from bench.__main__ import Loader, Postgres, resolve_request, seed, start_server


def variants() -> dict[str, dict[str, Any]]:
    empty = resolve_request()
    empty["blocks"] = []
    plain = resolve_request()
    for block in plain["blocks"]:
        block["inputs"] = json.loads(re.sub(r"\{\{ *(\w+) *\}\}", r"<\1>", json.dumps(block["inputs"])))
    return {"no blocks": empty, "blocks, no references": plain, "10 references": resolve_request()}


async def main() -> None:
    tokens = {r: pysecrets.token_urlsafe(24) for r in ("editor", "executor", "directory", "ops")}
    postgres = Postgres()
    server = None
    loader = None
    try:
        url = await postgres.fresh_database()
        server, address = start_server(url, Path(tempfile.mkdtemp(prefix="sst-breakdown-")), tokens)
        await seed(address, tokens)
        loader = Loader(address, tokens["executor"])
        loader.run("health", 1.0)
        loader.run("resolve", 1.0, resolve_request())
        for _ in range(2):
            health = loader.run("health", 3.0)
            health_rps = health["calls"] / health["seconds"]
            for name, request in variants().items():
                result = loader.run("resolve", 3.0, request)
                rps = result["calls"] / result["seconds"]
                print(f"{name:24} {rps:7,.0f}/s  {rps / health_rps:.2f} of health ({health_rps:,.0f}/s)")
    finally:
        if loader is not None:
            loader.close()
        if server is not None:
            server.terminate()
            server.wait(30)
        await postgres.drop_created()
        postgres.close()


if __name__ == "__main__":
    asyncio.run(main())

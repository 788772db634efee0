"""The Node example (@grpc/grpc-js + @grpc/proto-loader from protos/) against the real server.

Run by `make test` through its `test-node` step, which installs the npm packages first.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import grpc
import pytest

from tests.api import ADMIN, Api, W, set_, uid
from tests.conftest import TOKENS, Server

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "clients" / "node" / "resolve.js"


async def run_node(server: Server, token: str, request: dict[str, object], tmp_path: Path) -> tuple[int, str, str]:
    node = shutil.which("node")
    assert node, "make test-node runs these tests only where node is installed"
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request))
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        str(request_file),
        env={"SECRETS_ADDRESS": server.address, "SECRETS_TOKEN": token, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
def api(channel: grpc.aio.Channel) -> Api:
    return Api(channel)


async def test_node_client_resolves_nested_inputs(server: Server, api: Api, tmp_path: Path) -> None:
    ws, user = uid("ws"), uid("user")
    await api.member(ws, user, ADMIN)
    await api.save(ws, user, W, set_("NODE_TOKEN", "from-node-test"))
    request = {
        "workspace_id": ws,
        "workflow_id": "wf",
        "execution_id": "e1",
        "trigger": "TRIGGER_MANUAL",
        "triggering_user_id": user,
        "blocks": [
            {"block_id": "http", "inputs": {"headers": {"Authorization": "Bearer {{NODE_TOKEN}}"}, "n": 2}},
            {"block_id": "broken", "inputs": {"v": "{{MISSING}}"}},
        ],
    }

    code, out, err = await run_node(server, TOKENS["executor"], request, tmp_path)

    assert code == 0, err
    reply = json.loads(out)
    http, broken = reply["blocks"]
    assert http["inputs"] == {"headers": {"Authorization": "Bearer from-node-test"}, "n": 2}
    assert http["references"] == [
        {
            "field_path": "headers.Authorization",
            "key": "NODE_TOKEN",
            "scope": "SCOPE_WORKSPACE",
            "version": "1",
            # Where the value sits in "Bearer from-node-test", in code points: what a redactor masks.
            "start": 7,
            "end": 21,
        }
    ]
    assert broken["error"]["code"] == "BLOCK_ERROR_CODE_SECRET_NOT_FOUND"
    assert broken["error"]["field_path"] == "v"


async def test_node_client_sees_permission_denied_for_a_non_executor_token(server: Server, tmp_path: Path) -> None:
    request = {"workspace_id": "ws", "trigger": "TRIGGER_MANUAL", "triggering_user_id": "u", "blocks": []}
    code, _, err = await run_node(server, TOKENS["editor"], request, tmp_path)
    assert code == 1
    assert err.startswith("PERMISSION_DENIED")

"""F8: the executor's log redactor missed strings with two references.

The Python client guessed the substituted values by lining each template up with its resolved
string; with two keys it has not seen elsewhere in one string (`{{USER}}:{{PASS}}`) it could not
tell where one ends, so `resolution.redactor()` masked nothing. The response now says where each
value is (ResolvedReference.start/end, code points), and the redactor is built from exactly that.
"""

from __future__ import annotations

import pytest
from secrets_client import DirectoryClient, EditorClient, ExecutorClient
from secrets_client.redact import MASK

from tests.api import uid
from tests.conftest import TOKENS, Server


@pytest.fixture
async def clients(server: Server):  # type: ignore[no-untyped-def]
    executor = ExecutorClient(server.address, TOKENS["executor"])
    editor = EditorClient(server.address, TOKENS["editor"])
    directory = DirectoryClient(server.address, TOKENS["directory"])
    yield executor, editor, directory
    for c in (executor, editor, directory):
        await c.close()


async def test_two_references_in_one_string_are_both_masked(clients) -> None:  # type: ignore[no-untyped-def]
    executor, editor, directory = clients
    ws, user = uid("ws"), uid("user")
    await directory.put_member(ws, user, f"{user}@example.com", "admin")
    values = {"USER": "service-account", "PASS": "hunter2-but-longer"}
    await editor.save(user, ws, expected_revision=0, set=values)

    resolution = await executor.resolve(ws, {"b": {"auth": "{{USER}}:{{PASS}}"}}, triggering_user_id=user)

    block = resolution.blocks["b"]
    assert block.inputs == {"auth": "service-account:hunter2-but-longer"}
    redactor = resolution.redactor()
    assert len(redactor) > 0
    assert redactor.redact("auth=service-account:hunter2-but-longer") == f"auth={MASK}:{MASK}"
    assert redactor.redact("user service-account") == f"user {MASK}"
    assert redactor.redact("pass hunter2-but-longer") == f"pass {MASK}"


async def test_values_are_cut_where_the_server_put_them(clients) -> None:  # type: ignore[no-untyped-def]
    """Where guessing went wrong or gave up: values holding `{{`, an escape before a reference,
    non-ASCII values (offsets are code points), the same key twice."""
    executor, editor, directory = clients
    ws, user = uid("ws"), uid("user")
    await directory.put_member(ws, user, f"{user}@example.com", "admin")
    values = {"A": "x{{B}}y-alpha", "B": "béta-ünïcødé-\U0001f511", "C": "gamma:{{"}
    await editor.save(user, ws, expected_revision=0, set=values)

    resolution = await executor.resolve(
        ws,
        {"b": {"s": "\\{{A}} {{A}}{{B}} {{C}}{{C}}", "t": "{{B}}/{{A}}"}},
        triggering_user_id=user,
    )

    block = resolution.blocks["b"]
    assert block.inputs is not None
    assert block.inputs["s"] == "{{A}} x{{B}}y-alphabéta-ünïcødé-\U0001f511 gamma:{{gamma:{{"
    cut = [(r.key, block.inputs[r.field_path][r.start : r.end]) for r in block.references]
    # "s" first, then "t"; in each, the references in the order they appear.
    assert cut == [(key, values[key]) for key in ("A", "B", "C", "C", "B", "A")]
    redactor = resolution.redactor()
    for value in values.values():
        assert redactor.redact(f"<{value}>") == f"<{MASK}>"

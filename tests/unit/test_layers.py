"""The layering the README's "How it is built" describes, checked on every import in the code.

Each rule names a package and what it must never import (directly: every module is checked, so a
forbidden dependency cannot hide behind another module of the same package).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"

# Modules whose import means input or output: the domain is pure rules over values.
IO_MODULES = (
    "asyncio",
    "asyncpg",
    "grpc",
    "grpc_status",
    "google.protobuf",
    "google.rpc",
    "io",
    "logging",
    "os",
    "pathlib",
    "pgserver",
    "shutil",
    "socket",
    "subprocess",
    "tempfile",
    "threading",
    "time",
    "random",
    "urllib",
    "service.api",
    "service.app",
    "service.store",
    "service.crypto",
    "service.gen",
    "service.server",
    "service.config",
)

RULES: dict[str, tuple[str, ...]] = {
    # Servicers translate protobuf to use cases and back: no SQL, no rows, no database driver.
    "api": ("service.store", "asyncpg"),
    # Use cases talk to the store and the domain; they never see protobuf or gRPC.
    "app": ("service.api", "service.gen", "grpc", "grpc_status", "google.rpc"),
    # The store reads and writes rows: it never calls back up into use cases or servicers.
    "store": ("service.app", "service.api", "service.gen", "grpc"),
    "domain": IO_MODULES,
    "crypto": ("service.app", "service.api", "service.store", "asyncpg", "grpc"),
}


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    problems = []
    for path in sorted((SERVICE / package).rglob("*.py")):
        for name in imports_of(path):
            for banned in forbidden:
                if name == banned or name.startswith(banned + "."):
                    problems.append(f"{path.relative_to(SERVICE.parent)} imports {name}")
                    break
    return sorted(set(problems))


@pytest.mark.parametrize("package", sorted(RULES))
def test_layer_imports_only_what_it_may(package: str) -> None:
    assert violations(package, RULES[package]) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: a module that imports the store from the api layer is reported."""
    module = tmp_path / "bad.py"
    module.write_text("from service.store import repository as repo\nimport asyncpg\n")
    names = imports_of(module)
    assert "service.store.repository" in names and "asyncpg" in names

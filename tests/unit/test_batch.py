"""SaveSecrets batch validation and planning (SPEC 2.6) without a database."""

from __future__ import annotations

import pytest

from service.domain.batch import Change, Existing, OpKind, plan_changes, validate_changes
from service.domain.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from service.domain.model import Permission, Scope, SecretRole
from service.domain.values import SecretValue


def v(text: str) -> SecretValue:
    return SecretValue(text)


def test_every_bad_change_is_reported_with_its_index() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_changes(
            [
                Change("ok", value=v("1")),
                Change("bad key", value=v("1")),
                Change("EMPTY", value=v("")),
                Change("ok", delete=True),
                Change("R", rename_to="R"),
                Change("NOTHING"),
            ]
        )
    fields = [violation.field for violation in info.value.violations]
    assert fields == ["changes[1].key", "changes[2].value", "changes[3].key", "changes[4].rename_to", "changes[5]"]


def test_rename_target_counts_as_a_use_of_the_key() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_changes([Change("A", rename_to="B"), Change("B", value=v("x"))])
    assert info.value.violations[0].field == "changes[1].key"


def test_batch_size_limits() -> None:
    with pytest.raises(InvalidArgument):
        validate_changes([])
    with pytest.raises(InvalidArgument):
        validate_changes([Change(f"K{i}", value=v("x")) for i in range(3)], max_changes=2)


def test_violations_never_hold_the_value() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_changes([Change("bad key", value=v("CANARY" * 20000))])
    assert "CANARY" not in str(info.value) + repr(info.value.violations)


def test_plan_for_a_workspace_admin() -> None:
    existing = {"OLD": Existing("OLD", 4), "GONE": Existing("GONE", 1), "MOVE": Existing("MOVE", 2)}
    ops = plan_changes(
        Scope.WORKSPACE,
        [
            Change("NEW", value=v("n")),
            Change("OLD", value=v("o")),
            Change("GONE", delete=True),
            Change("MOVE", rename_to="MOVED"),
        ],
        existing,
        Permission.ADMIN,
        "u",
        "ws",
    )
    assert [(op.kind, op.key, op.version, op.new_key) for op in ops] == [
        (OpKind.CREATE, "NEW", 1, None),
        (OpKind.UPDATE, "OLD", 5, None),
        (OpKind.DELETE, "GONE", 0, None),
        (OpKind.RENAME, "MOVE", 2, "MOVED"),
    ]


def test_plan_rejects_missing_and_clashing_keys() -> None:
    with pytest.raises(NotFound):
        plan_changes(Scope.PERSONAL, [Change("X", delete=True)], {}, None, "u", "ws")
    with pytest.raises(AlreadyExists):
        plan_changes(
            Scope.PERSONAL,
            [Change("A", rename_to="B")],
            {"A": Existing("A", 1), "B": Existing("B", 1)},
            None,
            "u",
            "ws",
        )


def test_write_member_creates_but_cannot_change_others_secrets() -> None:
    plan_changes(Scope.WORKSPACE, [Change("NEW", value=v("x"))], {}, Permission.WRITE, "u", "ws")
    with pytest.raises(PermissionDenied):
        plan_changes(Scope.WORKSPACE, [Change("K", value=v("x"))], {"K": Existing("K", 1)}, Permission.WRITE, "u", "ws")
    # ...unless they are the secret's own ADMIN (for example its creator).
    plan_changes(
        Scope.WORKSPACE,
        [Change("K", value=v("x"))],
        {"K": Existing("K", 1, SecretRole.ADMIN)},
        Permission.WRITE,
        "u",
        "ws",
    )


def test_read_member_cannot_create_but_owner_of_personal_scope_can() -> None:
    with pytest.raises(PermissionDenied):
        plan_changes(Scope.WORKSPACE, [Change("NEW", value=v("x"))], {}, Permission.READ, "u", "ws")
    plan_changes(Scope.PERSONAL, [Change("NEW", value=v("x"))], {}, None, "u", "ws")

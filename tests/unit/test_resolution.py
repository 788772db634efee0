"""Resolution precedence (SPEC 2.4) and the permission rules it uses (SPEC 2.2)."""

from __future__ import annotations

import pytest

from service.domain.errors import InvalidArgument
from service.domain.model import BlockErrorCode, Permission, Scope, SecretRole, Trigger
from service.domain.resolution import Candidate, block_error_message, decide, run_user_for

WS = Candidate(Scope.WORKSPACE, "K", 3)
WS_RESTRICTED = Candidate(Scope.WORKSPACE, "K", 3, restricted=True)
WS_RESTRICTED_MEMBER = Candidate(Scope.WORKSPACE, "K", 3, restricted=True, run_user_role=SecretRole.MEMBER)
PERSONAL = Candidate(Scope.PERSONAL, "K", 7)


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [(Trigger.MANUAL, "clicker"), (Trigger.API, "owner"), (Trigger.WEBHOOK, "owner"), (Trigger.SCHEDULE, "owner")],
)
def test_run_user_per_trigger(trigger: Trigger, expected: str) -> None:
    assert run_user_for(trigger, "clicker", "owner") == expected


@pytest.mark.parametrize(
    ("trigger", "clicker", "owner"),
    [(None, "c", "o"), (Trigger.MANUAL, "", "o"), (Trigger.API, "c", ""), (Trigger.SCHEDULE, "", "")],
)
def test_run_user_needs_the_right_id(trigger: Trigger | None, clicker: str, owner: str) -> None:
    with pytest.raises(InvalidArgument):
        run_user_for(trigger, clicker, owner)


def test_workspace_secret_wins() -> None:
    assert decide("K", Permission.READ, WS, PERSONAL).chosen == WS


def test_personal_when_no_workspace_secret() -> None:
    assert decide("K", Permission.READ, None, PERSONAL).chosen == PERSONAL


def test_not_found_when_neither() -> None:
    d = decide("K", Permission.READ, None, None)
    assert d.chosen is None and d.error is BlockErrorCode.SECRET_NOT_FOUND


def test_non_member_gets_nothing_even_with_a_personal_secret() -> None:
    d = decide("K", None, WS, PERSONAL)
    assert d.chosen is None and d.error is BlockErrorCode.SECRET_NOT_FOUND
    assert "not a member" in d.reason


def test_restricted_secret_falls_back_to_personal_or_is_not_permitted() -> None:
    assert decide("K", Permission.WRITE, WS_RESTRICTED, PERSONAL).chosen == PERSONAL
    d = decide("K", Permission.WRITE, WS_RESTRICTED, None)
    assert d.error is BlockErrorCode.SECRET_NOT_PERMITTED


def test_restricted_secret_is_usable_by_its_members_and_workspace_admins() -> None:
    assert decide("K", Permission.READ, WS_RESTRICTED_MEMBER, None).chosen == WS_RESTRICTED_MEMBER
    assert decide("K", Permission.ADMIN, WS_RESTRICTED, None).chosen == WS_RESTRICTED


def test_block_error_message_names_block_field_and_key() -> None:
    d = decide("MISSING", Permission.READ, None, None)
    message = block_error_message("http-1", "headers.Authorization", d)
    assert message.startswith("SECRET_NOT_FOUND")
    assert "'http-1'" in message and "'headers.Authorization'" in message and "'MISSING'" in message

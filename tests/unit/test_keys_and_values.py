from __future__ import annotations

import pickle

import pytest

from service.domain.keys import email_problem, id_problem, is_valid_key, value_problem
from service.domain.values import SecretValue


@pytest.mark.parametrize("key", ["A", "api_key", "KEY_1", "_", "9LIVES", "x" * 256])
def test_valid_keys(key: str) -> None:
    assert is_valid_key(key)


@pytest.mark.parametrize("key", ["", "has space", "dash-ed", "dot.ted", "x" * 257, "ключ", "tab\t", "a\nb"])
def test_invalid_keys(key: str) -> None:
    assert not is_valid_key(key)


def test_value_rules() -> None:
    assert value_problem("x") is None
    assert value_problem("é" * 32768) is None  # 64 KiB exactly
    assert value_problem("") == "value is empty"
    assert "65537 bytes" in (value_problem("a" * 65537) or "")
    assert value_problem("a\x00b") == "value contains a NUL character"
    assert value_problem("\ud800") == "value is not valid UTF-8"


def test_value_problems_never_quote_the_value() -> None:
    canary = "CANARY-" + "z" * 70000
    problem = value_problem(canary) or ""
    assert "CANARY" not in problem


def test_ids_and_emails() -> None:
    assert id_problem("workspace_id", "") == "workspace_id is required"
    assert id_problem("user_id", "u" * 257) is not None
    assert id_problem("user_id", "u" * 256) is None
    assert id_problem("user_id", "a\x00b") is not None
    assert email_problem("a\x00@b.c") is not None
    assert id_problem("user_id", "bad\nid") is not None
    assert email_problem("a@b.c") is None
    assert email_problem("nope") is not None


def test_secret_value_masks_itself_everywhere() -> None:
    value = SecretValue("hunter2-canary")
    assert "hunter2" not in repr(value)
    assert "hunter2" not in str(value)
    assert "hunter2" not in f"{value} {value!r} {value:>20}"
    assert "hunter2" not in repr([value, {"k": value}])
    assert value.reveal() == "hunter2-canary"
    with pytest.raises(TypeError):
        pickle.dumps(value)
    with pytest.raises(TypeError):
        hash(value)


def test_secret_values_compare_by_content() -> None:
    assert SecretValue("a") == SecretValue("a")
    assert SecretValue("a") != SecretValue("b")

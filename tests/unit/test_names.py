"""Tenant and model names: plain URL-safe words, reserved route words refused."""

from __future__ import annotations

import pytest

from openmaas.errors import RequestValidationError
from openmaas.names import RESERVED_NAMES, check_model_name, check_tenant_name

VALID = ["a", "0", "fraud-detector", "v1.2_rc", "a" * 63, "9lives"]
INVALID = ["", "A", "Fraud", "-a", ".a", "_a", "a" * 64, "a b", "a/b", "a:b", "é", "a\tb"]


@pytest.mark.parametrize("name", VALID)
def test_valid_names_pass(name: str) -> None:
    assert check_model_name(name) == name
    assert check_tenant_name(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names_are_rejected(name: str) -> None:
    for check in (check_model_name, check_tenant_name):
        with pytest.raises(RequestValidationError, match="fraud-detector") as caught:
            check(name)
        assert caught.value.field == "name"


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_reserved_names_are_rejected(name: str) -> None:
    for check in (check_model_name, check_tenant_name):
        with pytest.raises(RequestValidationError, match="reserved"):
            check(name)


def test_route_words_are_reserved() -> None:
    assert {"versions", "ready", "infer"} <= RESERVED_NAMES


@pytest.mark.parametrize("name", ["a\n", "fraud-detector\n"])
def test_trailing_newline_is_rejected(name: str) -> None:
    for check in (check_model_name, check_tenant_name):
        with pytest.raises(RequestValidationError):
            check(name)

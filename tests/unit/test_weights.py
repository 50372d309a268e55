"""Fair-share weights: above 0, at most 1000, finite, and never a bool."""

from __future__ import annotations

import pytest

from openmaas.errors import RequestValidationError
from openmaas.weights import MAX_WEIGHT, check_weight


@pytest.mark.parametrize(("weight", "expected"), [(1, 1.0), (0.001, 0.001), (MAX_WEIGHT, 1000.0)])
def test_valid_weights_come_back_as_floats(weight: float, expected: float) -> None:
    assert check_weight(weight) == expected
    assert isinstance(check_weight(weight), float)


@pytest.mark.parametrize("weight", [0, -1, 1000.01, float("nan"), float("inf"), True, "2"])
def test_invalid_weights_are_refused(weight: float) -> None:
    with pytest.raises(RequestValidationError, match="above 0") as caught:
        check_weight(weight, field="grant_weight")
    assert caught.value.field == "grant_weight"

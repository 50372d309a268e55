"""Fair-share weights: how much of a model's queue a tenant (or a grant) gets, relatively."""

from __future__ import annotations

import math

from openmaas.errors import RequestValidationError

__all__ = ["DEFAULT_WEIGHT", "MAX_WEIGHT", "check_weight"]

DEFAULT_WEIGHT = 1.0
MAX_WEIGHT = 1000.0


def check_weight(weight: float, field: str = "weight") -> float:
    """Return ``weight`` as a float if it is in (0, MAX_WEIGHT], else RequestValidationError."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or not 0 < weight <= MAX_WEIGHT
    ):
        raise RequestValidationError(
            f"a weight must be a number above 0 and at most {MAX_WEIGHT:g}, not {weight!r}; "
            f"{DEFAULT_WEIGHT:g} is the default, 2 gets twice the default's share",
            field=field,
        )
    return float(weight)

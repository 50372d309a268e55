"""What every explainer takes and returns: a batch predictor, a background, an explanation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Background", "CostCapError", "Explanation", "Predict", "Quality"]

# Rows in (shape [n, *input shape]) -> the explained output, float64 [n, k] (k classes or 1).
Predict = Callable[[np.ndarray], np.ndarray]


class CostCapError(Exception):
    """The method would need more model evaluations than allowed (``needed`` > ``cap``)."""

    def __init__(self, method: str, needed: int, cap: int) -> None:
        super().__init__(f"{method} needs {needed} model evaluations; the cap is {cap}")
        self.method, self.needed, self.cap = method, needed, cap


@dataclass(frozen=True)
class Background:
    """Reference rows ``[k, *input shape]`` and their weights (summing to 1)."""

    rows: np.ndarray
    weights: np.ndarray
    source: str  # "sample" (as uploaded), "kmeans" (a summary), or "baseline" (one row)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "rows": int(self.rows.shape[0])}


@dataclass(frozen=True)
class Quality:
    """How far an explanation can be trusted, measured on it."""

    n_evals: int  # rows the model evaluated (a gradient point counts as one)
    converged: bool
    additivity_error: float | None = None  # SHAP family: |base + sum(phi) - f(x)|, worst class
    convergence_delta: float | None = None  # integrated gradients: completeness gap, relative
    standard_error: float | None = None  # sampling methods: largest standard error of a phi

    def to_dict(self) -> dict[str, Any]:
        return {
            "additivity_error": self.additivity_error,
            "convergence_delta": self.convergence_delta,
            "standard_error": self.standard_error,
            "n_evals": self.n_evals,
            "converged": self.converged,
        }


@dataclass(frozen=True)
class Explanation:
    """Attributions of one input row.

    ``attributions`` has the row's shape plus a trailing axis of the ``k`` explained outputs;
    ``base_values`` and ``prediction`` are ``[k]`` (float64).
    """

    method: str
    attributions: np.ndarray
    base_values: np.ndarray
    prediction: np.ndarray
    quality: Quality
    parameters: dict[str, Any] = field(default_factory=dict)

"""Exact Shapley values of one tabular row, and the interventional value function they share.

The value of a coalition ``S`` of features is interventional: the model is run on rows that
take ``x`` on ``S`` and a background row elsewhere, averaged with the background's weights,
``v(S) = sum_b w_b f(x_S, b_rest)``. ``v(all) = f(x)`` and ``v(none) = sum_b w_b f(b)`` (the
base value) are evaluated once, on their own rows, and reused, so that the efficiency identity
``base + sum(phi) = f(x)`` holds up to rounding whatever the model's own rounding is.

Every model call goes through :func:`predict_rows`, which feeds ``predict`` at most
:data:`CHUNK_ROWS` rows at a time; ``n_evals`` counts every row it passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openmaas.explain.types import Background, CostCapError, Explanation, Predict, Quality

__all__ = [
    "CHUNK_ROWS",
    "MAX_EXACT_FEATURES",
    "Endpoints",
    "additivity_error",
    "check_background",
    "coalition_masks",
    "coalition_values",
    "evaluate_endpoints",
    "exact_cost",
    "exact_shapley",
    "predict_rows",
    "shapley_weights",
]

CHUNK_ROWS = 4096  # the most rows one call of ``predict`` receives
MAX_EXACT_FEATURES = 16  # 2**16 coalitions; beyond that exact Shapley is refused


def predict_rows(predict: Predict, rows: np.ndarray) -> np.ndarray:
    """Run ``predict`` on ``rows`` in chunks of at most :data:`CHUNK_ROWS`: float64 ``[n, k]``.

    A 1-D answer is read as one output (``[n, 1]``); any other shape is a ``ValueError``.
    """
    n = int(rows.shape[0])
    parts: list[np.ndarray] = []
    for start in range(0, n, CHUNK_ROWS):
        chunk = rows[start : start + CHUNK_ROWS]
        out = np.asarray(predict(chunk), dtype=np.float64)
        if out.ndim == 1:
            out = out.reshape(-1, 1)
        if out.ndim != 2 or out.shape[0] != chunk.shape[0]:
            raise ValueError(
                f"predict returned shape {out.shape} for {chunk.shape[0]} rows; "
                "expected [rows, outputs]"
            )
        parts.append(out)
    if not parts:
        raise ValueError("predict_rows needs at least one row")
    return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class Endpoints:
    """The row, its background and the two coalitions every Shapley method needs."""

    predict: Predict
    x: np.ndarray  # float64 [M]
    rows: np.ndarray  # float64 [K, M] background rows
    weights: np.ndarray  # float64 [K], summing to 1
    prediction: np.ndarray  # f(x), float64 [k]
    base: np.ndarray  # sum_b w_b f(b), float64 [k]

    @property
    def n_features(self) -> int:
        """M, the number of features of the row."""
        return int(self.x.shape[0])

    @property
    def n_background(self) -> int:
        """K, the number of background rows."""
        return int(self.rows.shape[0])

    @property
    def fixed_evals(self) -> int:
        """Rows spent on ``f(x)`` and on the background's own predictions: ``1 + K``."""
        return 1 + self.n_background


def _check_inputs(
    x: np.ndarray, background: Background
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert the row and background to float64 arrays."""
    row = np.asarray(x, dtype=np.float64)
    if row.ndim != 1 or row.shape[0] < 1:
        raise ValueError(f"x must be one row of shape [M] with M >= 1, not {row.shape}")
    rows = np.asarray(background.rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != row.shape[0] or rows.shape[0] < 1:
        raise ValueError(
            f"background rows have shape {rows.shape}; expected [K >= 1, {row.shape[0]}]"
        )
    weights = np.asarray(background.weights, dtype=np.float64).reshape(-1)
    if weights.shape[0] != rows.shape[0]:
        raise ValueError(f"{weights.shape[0]} background weights for {rows.shape[0]} rows")
    if (weights < 0).any() or abs(float(weights.sum()) - 1.0) > 1e-6:
        raise ValueError("background weights must be non-negative and sum to 1")
    return row, rows, weights


def check_background(x: np.ndarray, background: Background) -> tuple[int, int]:
    """``(M, K)`` of a row and its background, after checking that their shapes agree."""
    row, rows, _ = _check_inputs(x, background)
    return int(row.shape[0]), int(rows.shape[0])


def evaluate_endpoints(x: np.ndarray, predict: Predict, background: Background) -> Endpoints:
    """Evaluate ``f(x)`` (1 row) and the background (K rows): ``1 + K`` model evaluations."""
    row, rows, weights = _check_inputs(x, background)
    out = predict_rows(predict, np.concatenate([row[None, :], rows], axis=0))
    return Endpoints(
        predict=predict,
        x=row,
        rows=rows,
        weights=weights,
        prediction=out[0],
        base=weights @ out[1:],
    )


def coalition_values(ends: Endpoints, masks: np.ndarray) -> tuple[np.ndarray, int]:
    """``v(S)`` for each boolean mask ``[C, M]`` (True = taken from ``x``): ``([C, k], rows)``.

    Masks are expanded against the background a block at a time, so memory stays at about
    :data:`CHUNK_ROWS` rows whatever ``C`` is; every coalition costs ``K`` rows.
    """
    count = int(masks.shape[0])
    k_bg = ends.n_background
    per_block = max(1, CHUNK_ROWS // k_bg)
    values: list[np.ndarray] = []
    for start in range(0, count, per_block):
        block = masks[start : start + per_block]
        rows = np.where(block[:, None, :], ends.x[None, None, :], ends.rows[None, :, :])
        out = predict_rows(ends.predict, rows.reshape(-1, ends.n_features))
        values.append(np.einsum("cbk,b->ck", out.reshape(block.shape[0], k_bg, -1), ends.weights))
    if not values:
        return np.zeros((0, ends.prediction.shape[0])), 0
    return np.concatenate(values, axis=0), count * k_bg


def additivity_error(ends: Endpoints, phi: np.ndarray) -> float:
    """``max_k |base + sum_i phi_i - f(x)|`` of attributions ``phi`` ``[M, k]``."""
    return float(np.max(np.abs(ends.base + phi.sum(axis=0) - ends.prediction)))


def shapley_weights(n_features: int) -> np.ndarray:
    """``w[s] = s! (M - s - 1)! / M!`` for ``s = 0 .. M-1``: the weight of a coalition of size
    ``s`` (not holding ``i``) in feature ``i``'s Shapley value, float64 ``[M]``."""
    m = n_features
    return np.array([1.0 / (m * math.comb(m - 1, s)) for s in range(m)], dtype=np.float64)


def coalition_masks(n_features: int, codes: np.ndarray) -> np.ndarray:
    """Boolean masks ``[C, M]`` of coalition codes (bit ``i`` of the code = feature ``i``)."""
    bits = np.arange(n_features, dtype=np.int64)
    return ((codes[:, None] >> bits[None, :]) & 1).astype(bool)


def exact_cost(n_features: int, n_background: int) -> int:
    """Model evaluations of exact Shapley: ``1 + K (2^M - 1)``.

    One row for ``f(x)``, ``K`` for the background (the empty coalition), and ``K`` for each
    of the ``2^M - 2`` other coalitions that are neither empty nor full.
    """
    return int(1 + n_background * (2**n_features - 1))


def exact_shapley(
    x: np.ndarray, predict: Predict, background: Background, max_evals: int
) -> Explanation:
    """Exact interventional Shapley values of row ``x`` over all ``2^M`` coalitions.

    ``phi_i = sum_S w(|S|) (v(S + i) - v(S))`` is computed as one product of a coefficient
    matrix ``[2^M, M]`` with the coalition values ``[2^M, k]``. Raises
    ``CostCapError("exact", exact_cost(M, K), max_evals)`` when that cost exceeds
    ``max_evals`` or when ``M`` > :data:`MAX_EXACT_FEATURES` (whatever the cap).
    """
    m, k_bg = check_background(x, background)
    needed = exact_cost(m, k_bg)
    if m > MAX_EXACT_FEATURES or needed > max_evals:
        raise CostCapError("exact", needed, max_evals)
    ends = evaluate_endpoints(x, predict, background)
    codes = np.arange(2**m, dtype=np.int64)
    masks = coalition_masks(m, codes)
    inner, inner_evals = coalition_values(ends, masks[1:-1])
    values = np.concatenate([ends.base[None, :], inner, ends.prediction[None, :]], axis=0)
    sizes = masks.sum(axis=1)
    weights = shapley_weights(m)
    coef = np.where(
        masks,
        weights[np.clip(sizes - 1, 0, m - 1)][:, None],
        -weights[np.clip(sizes, 0, m - 1)][:, None],
    )
    phi = coef.T @ values
    return Explanation(
        method="exact",
        attributions=phi,
        base_values=ends.base,
        prediction=ends.prediction,
        quality=Quality(
            n_evals=ends.fixed_evals + inner_evals,
            converged=True,
            additivity_error=additivity_error(ends, phi),
            standard_error=None,
        ),
        parameters={"background_rows": k_bg, "coalitions": 2**m},
    )

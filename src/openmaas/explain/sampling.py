"""Sampled Shapley values of one tabular row: antithetic permutations and KernelSHAP.

Both spend a budget of model evaluations (rows passed to ``predict``) fixed in advance, both
are deterministic for a seed (``numpy.random.default_rng(seed)``), and both report how much
their answer would move with another seed as a standard error. The value function is the
interventional one of :mod:`openmaas.explain.shapley`.

``converged`` means the same for both: ``additivity_error <= 1e-6`` and
``standard_error <= 0.01 * max_k |f(x) - base|`` (an unknown standard error never converges).
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from openmaas.explain.shapley import (
    Endpoints,
    additivity_error,
    check_background,
    coalition_values,
    evaluate_endpoints,
)
from openmaas.explain.types import Background, CostCapError, Explanation, Predict, Quality

__all__ = [
    "ADDITIVITY_TOLERANCE",
    "BOOTSTRAP_REFITS",
    "RELATIVE_SE_TOLERANCE",
    "kernel_minimum_cost",
    "kernel_shap",
    "permutation_pair_cost",
    "permutation_shap",
]

ADDITIVITY_TOLERANCE = 1e-6  # converged needs additivity_error at most this
RELATIVE_SE_TOLERANCE = 0.01  # ... and standard_error at most this times max |f(x) - base|
BOOTSTRAP_REFITS = 24  # KernelSHAP re-fits on resampled coalitions (no model evaluations)
_BLOCK_ROWS = 65_536  # model rows per block of permutation pairs (bounds memory)


def _converged(ends: Endpoints, additivity: float, standard_error: float | None) -> bool:
    """The shared convergence rule of the sampling methods (see the module docstring)."""
    if standard_error is None:
        return False
    scale = float(np.max(np.abs(ends.prediction - ends.base)))
    return additivity <= ADDITIVITY_TOLERANCE and standard_error <= RELATIVE_SE_TOLERANCE * scale


def _explanation(
    method: str,
    ends: Endpoints,
    phi: np.ndarray,
    n_evals: int,
    standard_error: float | None,
    parameters: dict[str, object],
) -> Explanation:
    """Wrap attributions ``[M, k]`` with their measured quality."""
    additivity = additivity_error(ends, phi)
    return Explanation(
        method=method,
        attributions=phi,
        base_values=ends.base,
        prediction=ends.prediction,
        quality=Quality(
            n_evals=n_evals,
            converged=_converged(ends, additivity, standard_error),
            additivity_error=additivity,
            standard_error=standard_error,
        ),
        parameters=dict(parameters),
    )


def permutation_pair_cost(n_features: int, n_background: int) -> int:
    """Model evaluations of one antithetic pair of permutations: ``2 (M - 1) K``.

    Each permutation visits ``M - 1`` coalitions besides the empty and the full one (whose
    values are known), and its reverse visits the ``M - 1`` complements of those.
    """
    return 2 * (n_features - 1) * n_background


def _pair_estimates(ends: Endpoints, forward: np.ndarray) -> tuple[np.ndarray, int]:
    """Each antithetic pair's estimate of ``phi`` ``[P, M, k]`` (a permutation of ``forward``
    ``[P, M]`` and its reverse, averaged), and the model evaluations spent."""
    pairs, m = forward.shape
    orders = np.concatenate([forward, forward[:, ::-1]], axis=0)  # [2P, M]
    ranks = np.argsort(orders, axis=1)  # ranks[p, i] = position of feature i in order p
    masks = ranks[:, None, :] < np.arange(1, m)[None, :, None]  # [2P, M - 1, M]
    inner, evals = coalition_values(ends, masks.reshape(-1, m))
    k = ends.prediction.shape[0]
    chain = np.concatenate(
        [
            np.broadcast_to(ends.base, (2 * pairs, 1, k)),
            inner.reshape(2 * pairs, m - 1, k),
            np.broadcast_to(ends.prediction, (2 * pairs, 1, k)),
        ],
        axis=1,
    )
    steps = np.diff(chain, axis=1)  # steps[p, t] = contribution of feature orders[p, t]
    contributions = np.empty_like(steps)
    contributions[np.arange(2 * pairs)[:, None], orders] = steps
    return 0.5 * (contributions[:pairs] + contributions[pairs:]), evals


def permutation_shap(
    x: np.ndarray, predict: Predict, background: Background, max_evals: int, seed: int
) -> Explanation:
    """Shapley values of row ``x`` from antithetic permutation sampling.

    Costs ``1 + K`` (``f(x)`` and the background) plus :func:`permutation_pair_cost` per pair,
    and runs as many pairs as fit in ``max_evals`` (one pair when ``M <= 2``: it already holds
    every ordering). Each permutation's marginal contributions telescope to
    ``f(x) - base``, so additivity holds to rounding; it is measured and reported anyway.
    ``standard_error`` is the largest standard error of a ``phi`` over the pairs (``0.0`` when
    ``M <= 2``; ``None`` when a single pair of ``M > 2`` features leaves it unknown).
    ``converged`` is ``additivity_error <= 1e-6 and standard_error <= 0.01 * max_k |f(x) -
    base|`` (False when the standard error is unknown). ``parameters["permutations"]`` counts
    both members of every pair. Raises
    ``CostCapError("permutation", 1 + K + pair cost, max_evals)`` when not even one pair fits.
    """
    m, k_bg = check_background(x, background)
    per_pair = permutation_pair_cost(m, k_bg)
    fixed = 1 + k_bg
    if fixed + per_pair > max_evals:
        raise CostCapError("permutation", fixed + per_pair, max_evals)
    pairs = 1 if m <= 2 else (max_evals - fixed) // per_pair
    ends = evaluate_endpoints(x, predict, background)
    rng = np.random.default_rng(seed)
    k = ends.prediction.shape[0]
    mean, spread, done = np.zeros((m, k)), np.zeros((m, k)), 0
    inner_evals, block = 0, max(1, _BLOCK_ROWS // max(per_pair, 1))
    for start in range(0, pairs, block):
        count = min(block, pairs - start)
        forward = rng.permuted(np.tile(np.arange(m), (count, 1)), axis=1)
        estimates, evals = _pair_estimates(ends, forward)
        inner_evals += evals
        # merge this block's mean and sum of squared deviations into the running ones (Chan)
        block_mean = estimates.mean(axis=0)
        gap, merged = block_mean - mean, done + count
        mean = mean + gap * (count / merged)
        spread += ((estimates - block_mean) ** 2).sum(axis=0) + gap**2 * (done * count / merged)
        done = merged
    standard_error: float | None
    if m <= 2:
        standard_error = 0.0
    elif pairs >= 2:
        standard_error = float(np.sqrt(spread / (pairs - 1) / pairs).max())
    else:
        standard_error = None
    return _explanation(
        "permutation",
        ends,
        mean,
        fixed + inner_evals,
        standard_error,
        {"seed": seed, "permutations": 2 * pairs, "background_rows": k_bg},
    )


def kernel_minimum_cost(n_features: int, n_background: int) -> int:
    """The fewest model evaluations KernelSHAP accepts: ``1 + K + K min(2^M - 2, 2M)``.

    ``2M`` coalitions (``M`` sampled pairs) is the least that reliably pins down the ``M - 1``
    free unknowns of the regression; a smaller ``M`` is enumerated instead.
    """
    return 1 + n_background + n_background * min((1 << n_features) - 2, 2 * n_features)


class _Plan:
    """The coalitions KernelSHAP evaluates and how their regression weights are formed.

    The first ``n_enumerated`` masks are every coalition of the sizes in ``enumerated_sizes``,
    each with its exact Shapley-kernel weight; the others were sampled (pairs ``S`` and its
    complement) from the remaining sizes, and weigh ``sampled_mass * count / draws``.
    """

    def __init__(self, n_features: int, budget: int, rng: np.random.Generator) -> None:
        m = n_features
        sizes = np.arange(1, m)
        mass = np.zeros(m + 1)
        mass[1:m] = 1.0 / (sizes * (m - sizes))
        mass /= mass.sum()  # the kernel's total weight of each coalition size
        enumerated: list[int] = []
        left_budget, left_mass = budget, 1.0
        for size in range(1, m // 2 + 1):
            group = sorted({size, m - size})
            count = sum(math.comb(m, t) for t in group)
            group_mass = float(mass[group].sum())
            fits = count <= left_budget and (
                2**m - 2 <= budget or count * left_mass <= left_budget * group_mass
            )
            if not fits:
                break
            enumerated += group
            left_budget -= count
            left_mass -= group_mass
        blocks = [_all_of_size(m, t) for t in sorted(enumerated)]
        self.enumerated_sizes = sorted(enumerated)
        free = [t for t in range(1, m) if t not in enumerated]
        self.sampled_mass = max(left_mass, 0.0) if free else 0.0
        self.fixed_weights = np.concatenate(
            [np.full(math.comb(m, t), mass[t] / math.comb(m, t)) for t in self.enumerated_sizes]
            or [np.zeros(0)]
        )
        self.n_enumerated = int(self.fixed_weights.shape[0])
        sampled, self.draws = _sample_pairs(m, free, mass, left_budget, self.n_enumerated, rng)
        self.masks = np.concatenate([*blocks, sampled], axis=0)

    def sampled_weights(self, draws: np.ndarray) -> np.ndarray:
        """Regression weights of the sampled coalitions, counting the pair ``draws`` ``[n, 2]``."""
        size = self.masks.shape[0] - self.n_enumerated
        if not draws.shape[0]:
            return np.zeros(size)
        counts = np.bincount(draws.ravel() - self.n_enumerated, minlength=size)
        weights: np.ndarray = self.sampled_mass * counts / (2.0 * draws.shape[0])
        return weights


def _all_of_size(n_features: int, size: int) -> np.ndarray:
    """Every coalition of ``size`` features, as boolean masks ``[C(M, size), M]``."""
    members = np.array(list(combinations(range(n_features), size)), dtype=np.int64)
    masks = np.zeros((members.shape[0], n_features), dtype=bool)
    masks[np.arange(members.shape[0])[:, None], members] = True
    return masks


def _sample_pairs(
    m: int,
    free: list[int],
    mass: np.ndarray,
    budget: int,
    offset: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw pairs (``S``, complement) with sizes in ``free`` by the kernel until ``budget``
    distinct coalitions are held: ``(distinct masks [C, M], draws [n, 2] as row indices)``.

    Row indices start at ``offset`` (after the enumerated coalitions).
    """
    seen: dict[bytes, int] = {}
    masks: list[np.ndarray] = []
    draws: list[tuple[int, int]] = []
    if free and budget >= 2:
        probabilities = mass[free] / mass[free].sum()
        max_draws, drawn, full = 20 * budget + 100, 0, False
        while not full and drawn < max_draws:
            batch = min(max(budget // 2, 16), max_draws - drawn)
            sizes = rng.choice(np.asarray(free), size=batch, p=probabilities)
            keys = rng.random((batch, m))
            cut = np.sort(keys, axis=1)[np.arange(batch), sizes - 1]
            chosen = keys <= cut[:, None]
            packed, packed_rest = np.packbits(chosen, axis=1), np.packbits(~chosen, axis=1)
            for row in range(batch):
                key, rest = packed[row].tobytes(), packed_rest[row].tobytes()
                if key not in seen:
                    if len(seen) + 2 > budget:
                        full = True
                        break
                    seen[key], seen[rest] = offset + len(masks), offset + len(masks) + 1
                    masks += [chosen[row], ~chosen[row]]
                draws.append((seen[key], seen[rest]))
            drawn += batch
    stacked = np.array(masks, dtype=bool).reshape(-1, m)
    return stacked, np.array(draws, dtype=np.int64).reshape(-1, 2)


class _Regression:
    """Weighted least squares ``v(S) - base ~ z_S @ phi`` subject to ``sum(phi) = total``.

    The last feature is eliminated (``phi_M = total - sum of the others``), which enforces the
    constraint exactly. The fit goes through the ``(M-1) x (M-1)`` normal equations, whose
    enumerated part is summed once, so a bootstrap re-fit only re-weights the sampled rows.
    """

    def __init__(
        self, masks: np.ndarray, gains: np.ndarray, total: np.ndarray, plan: _Plan
    ) -> None:
        z = masks.astype(np.float64)
        design = z[:, :-1] - z[:, -1:]
        self.joined = np.concatenate([design, gains - z[:, -1:] * total[None, :]], axis=1)
        self.width, self.total, self.split = design.shape[1], total, plan.n_enumerated
        head = self.joined[: self.split]
        self.fixed = (head[:, : self.width] * plan.fixed_weights[:, None]).T @ head

    def fit(self, sampled_weights: np.ndarray) -> np.ndarray:
        """``phi`` ``[M, k]`` with these weights on the sampled coalitions."""
        rest = self.joined[self.split :]
        normal = self.fixed + (rest[:, : self.width] * sampled_weights[:, None]).T @ rest
        head = np.linalg.lstsq(normal[:, : self.width], normal[:, self.width :], rcond=None)[0]
        return np.concatenate([head, (self.total - head.sum(axis=0))[None, :]], axis=0)


def kernel_shap(
    x: np.ndarray, predict: Predict, background: Background, max_evals: int, seed: int
) -> Explanation:
    """KernelSHAP (Lundberg & Lee 2017) of row ``x``: a Shapley-kernel weighted regression.

    The budget, ``(max_evals - 1 - K) // K`` coalitions, is spent so: when all ``2^M - 2``
    coalitions fit they are all enumerated (and the answer is exact Shapley); otherwise whole
    sizes (1 and M-1, then 2 and M-2, ...) are enumerated while the kernel would give them
    at least as many samples as they have coalitions, and the rest is sampled in pairs
    (``S`` and its complement) by the kernel from the remaining sizes, duplicates counted
    rather than re-evaluated. The regression enforces ``sum(phi) = f(x) - base`` exactly.
    ``standard_error`` is the largest standard deviation of a ``phi`` over
    :data:`BOOTSTRAP_REFITS` re-fits on resampled pair draws (no model evaluations; ``0.0``
    when nothing was sampled); ``converged`` as for :func:`permutation_shap`. Raises
    ``CostCapError("kernel", kernel_minimum_cost(M, K), max_evals)`` below that minimum.
    """
    m, k_bg = check_background(x, background)
    needed = kernel_minimum_cost(m, k_bg)
    if needed > max_evals:
        raise CostCapError("kernel", needed, max_evals)
    ends = evaluate_endpoints(x, predict, background)
    total = ends.prediction - ends.base
    rng = np.random.default_rng(seed)
    if m == 1:
        return _explanation(
            "kernel",
            ends,
            total[None, :],
            ends.fixed_evals,
            0.0,
            {"seed": seed, "background_rows": k_bg, "coalitions": 0},
        )
    plan = _Plan(m, (max_evals - ends.fixed_evals) // k_bg, rng)
    values, inner_evals = coalition_values(ends, plan.masks)
    regression = _Regression(plan.masks, values - ends.base[None, :], total, plan)
    phi = regression.fit(plan.sampled_weights(plan.draws))
    standard_error: float | None = 0.0
    if plan.sampled_mass > 0.0:
        standard_error = None
        n_draws = plan.draws.shape[0]
        if n_draws >= 2:
            refits = [
                regression.fit(plan.sampled_weights(plan.draws[picks]))
                for picks in rng.integers(0, n_draws, size=(BOOTSTRAP_REFITS, n_draws))
            ]
            standard_error = float(np.std(np.stack(refits), axis=0, ddof=1).max())
    return _explanation(
        "kernel",
        ends,
        phi,
        ends.fixed_evals + inner_evals,
        standard_error,
        {
            "seed": seed,
            "background_rows": k_bg,
            "coalitions": int(plan.masks.shape[0]),
            "enumerated_sizes": plan.enumerated_sizes,
            "sampled_pairs": int(plan.draws.shape[0]),
            "bootstrap": BOOTSTRAP_REFITS if plan.sampled_mass > 0.0 else 0,
        },
    )

"""Integrated gradients (Sundararajan et al. 2017) of a differentiable ONNX graph.

The attribution of input ``i`` is ``(x_i - b_i)`` times the average gradient of the target
output along the straight path from the baseline ``b`` to ``x``. The average is a quadrature
on ``m`` equal intervals; ``m`` starts at 16 and doubles (each doubling adds the midpoints,
every earlier gradient is reused) until the attributions add up to ``f(x) - f(b)`` within the
tolerance (completeness), or the next doubling would pass the evaluation cap. The quadrature
is Simpson's rule by default (``(4 T(m) - T(m/2)) / 3`` of the trapezoid sums, the same
points), or the trapezoid rule. The graph runs in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from openmaas.explain.types import CostCapError, Explanation, Quality

if TYPE_CHECKING:
    from openmaas.explain.onnx_torch import TorchGraph

__all__ = ["BATCH_POINTS", "FIRST_INTERVALS", "Quadrature", "integrated_gradients"]

FIRST_INTERVALS = 16
BATCH_POINTS = 64  # gradient points computed together
_FLOOR = 1e-9  # absolute completeness gap accepted when f(x) - f(b) is about 0

Quadrature = Literal["trapezoid", "simpson"]


@dataclass(frozen=True)
class _Path:
    """The straight path from the baseline to ``x``, and the output explained along it."""

    graph: TorchGraph
    start: np.ndarray  # the baseline
    step: np.ndarray  # x - baseline
    target: int

    def gradients(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Target values ``[p]`` and gradients ``[p, *x shape]`` at ``baseline + alpha * step``."""
        values, grads = [], []
        for first in range(0, len(alphas), BATCH_POINTS):
            chunk = alphas[first : first + BATCH_POINTS]
            shape = (len(chunk),) + (1,) * self.start.ndim
            points = self.start[None] + chunk.reshape(shape) * self.step[None]
            value, grad = _target_gradients(self.graph, points, self.target)
            values.append(value)
            grads.append(grad)
        return np.concatenate(values), np.concatenate(grads)


def integrated_gradients(
    x: np.ndarray,
    graph: TorchGraph,
    *,
    baseline: np.ndarray | None = None,
    target: int,
    max_evals: int,
    tolerance: float = 0.01,
    quadrature: Quadrature = "simpson",
) -> Explanation:
    """Integrated gradients of output ``target`` for one input ``x`` (no batch axis).

    ``baseline`` (``x``'s shape) defaults to zeros. Attributions are ``x.shape + (1,)``;
    ``quality.convergence_delta`` is the completeness gap
    ``|sum(attributions) - (f(x) - f(baseline))|`` divided by ``|f(x) - f(baseline)|`` (or by
    ``1e-9 / tolerance`` when that is larger: an absolute floor of 1e-9 on the gap), and
    ``converged`` says it is at most ``tolerance``. ``quadrature`` is ``"simpson"`` or
    ``"trapezoid"`` (on the same points). Raises ``CostCapError`` when ``max_evals`` cannot
    afford 16 intervals (17 points), ``ValueError`` for a bad shape, target or tolerance.
    """
    if tolerance <= 0:
        raise ValueError("tolerance must be positive")
    if quadrature not in ("trapezoid", "simpson"):
        raise ValueError(f"unknown quadrature {quadrature!r}")
    row = np.asarray(x, dtype=np.float64)
    _check_shape(row, graph)
    start = np.zeros_like(row) if baseline is None else np.asarray(baseline, dtype=np.float64)
    if start.shape != row.shape:
        raise ValueError(f"the baseline has shape {start.shape}, the input {row.shape}")
    if max_evals < FIRST_INTERVALS + 1:
        raise CostCapError("integrated_gradients", FIRST_INTERVALS + 1, max_evals)
    path = _Path(graph, start, row - start, target)
    intervals = FIRST_INTERVALS
    values, grads = path.gradients(np.arange(intervals + 1) / intervals)
    ends = (grads[0] + grads[-1]) / 2  # the trapezoid rule's end points count half
    inner = grads[1:-1].sum(axis=0)  # the interior points, each counted once
    coarse = (ends + grads[2:-1:2].sum(axis=0)) / (intervals // 2)  # trapezoid, 8 intervals
    n_evals = intervals + 1
    while True:
        fine = (ends + inner) / intervals
        average = fine if quadrature == "trapezoid" else (4 * fine - coarse) / 3
        attributions = path.step * average
        delta = _relative_gap(attributions, (values[0], values[-1]), tolerance)
        if delta <= tolerance or n_evals + intervals > max_evals:
            break
        _, grads = path.gradients((2 * np.arange(intervals) + 1) / (2 * intervals))
        inner = inner + grads.sum(axis=0)  # the midpoints of the current intervals
        n_evals += intervals
        intervals *= 2
        coarse = fine
    return Explanation(
        method="integrated_gradients",
        attributions=attributions[..., None],
        base_values=np.array([float(values[0])]),
        prediction=np.array([float(values[-1])]),
        quality=Quality(n_evals=n_evals, converged=delta <= tolerance, convergence_delta=delta),
        parameters={
            "steps": intervals,
            "target": target,
            "baseline": "zeros" if baseline is None else "given",
            "quadrature": quadrature,
        },
    )


def _relative_gap(attributions: np.ndarray, ends: tuple[float, float], tolerance: float) -> float:
    """The completeness gap over ``max(|f(x) - f(b)|, 1e-9 / tolerance)``."""
    difference = float(ends[1]) - float(ends[0])
    gap = abs(float(attributions.sum()) - difference)
    return gap / max(abs(difference), _FLOOR / tolerance)


def _check_shape(row: np.ndarray, graph: TorchGraph) -> None:
    """Refuse an input whose shape contradicts the graph's declared input shape."""
    declared = graph.input_shape[1:]
    if not graph.input_shape:
        return
    if len(declared) != row.ndim or any(
        size is not None and size != actual
        for size, actual in zip(declared, row.shape, strict=True)
    ):
        sizes = ["?" if size is None else size for size in declared]
        raise ValueError(f"the input has shape {list(row.shape)}; the graph takes {sizes}")


def _target_gradients(
    graph: TorchGraph, points: np.ndarray, target: int
) -> tuple[np.ndarray, np.ndarray]:
    """Output ``target`` at each of ``points`` and its gradient with respect to the point."""
    import torch

    rows = torch.from_numpy(np.ascontiguousarray(points)).requires_grad_(True)
    output = graph(rows)
    width = 1 if output.ndim == 1 else int(output.shape[1])
    if not 0 <= target < width:
        raise ValueError(f"target {target} is not one of the output's {width} columns")
    chosen = output if output.ndim == 1 else output[:, target]
    grad = None
    if chosen.requires_grad:  # else the output does not depend on the input at all
        (grad,) = torch.autograd.grad(chosen.sum(), rows, allow_unused=True)
    gradient = np.zeros_like(points) if grad is None else grad.detach().numpy()
    return chosen.detach().numpy(), gradient

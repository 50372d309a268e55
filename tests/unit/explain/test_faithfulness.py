"""Faithfulness: on a model where 3 of 20 features matter, SHAP finds them and ranks well.

The model is a GradientBoostingRegressor trained on ``y = 4 tanh(x2) + x7² + 1.5 x11 + noise``
(20 standard normal features), exported to ONNX and run by onnxruntime.

Deletion curve of a feature order for row ``x``: replace the features, in that order, by the
background mean, one more at each step ``t = 0..M``; ``d_t = |f(x_t) - f(x)|`` is how far the
prediction has moved away from ``f(x)``, ``progress_t = d_t / max_t d_t`` and the curve is
``1 - progress_t`` (from 1 at ``t = 0``). Its area (trapezoid, ``t`` scaled to [0, 1]) is lower
the sooner an order moves the prediction away from ``f(x)``: lower is more faithful.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import onnxruntime as ort
import pytest

from openmaas.explain.background import summarize
from openmaas.explain.sampling import kernel_shap, permutation_shap
from openmaas.explain.types import Background, Explanation, Predict

INFORMATIVE = {2, 7, 11}
N_FEATURES = 20


def target(rows: np.ndarray) -> np.ndarray:
    return 4 * np.tanh(rows[:, 2]) + rows[:, 7] ** 2 + 1.5 * rows[:, 11]


@cache
def trained() -> tuple[ort.InferenceSession, np.ndarray]:
    """The ONNX session of the boosted trees, and their training rows."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    data = rng.normal(size=(2000, N_FEATURES))
    labels = target(data) + 0.1 * rng.normal(size=2000)
    model = GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=0)
    model.fit(data.astype(np.float32), labels)
    onx = to_onnx(model, data[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, data


def predict(rows: np.ndarray) -> np.ndarray:
    session, _ = trained()
    name = session.get_inputs()[0].name
    out = session.run(None, {name: rows.astype(np.float32)})[0]
    return np.asarray(out, dtype=np.float64).reshape(rows.shape[0], -1)


def explained_rows() -> tuple[Background, np.ndarray]:
    """A k-means background of 8 rows, and 10 test rows where the informative features are
    away from their mean and the prediction is away from the background's."""
    _, data = trained()
    background = summarize(data, max_rows=8, seed=0)
    mean = background.weights @ background.rows
    candidates = np.random.default_rng(1).normal(size=(3000, N_FEATURES))
    away = (np.abs(candidates[:, sorted(INFORMATIVE)]) > 0.6).all(axis=1)
    moved = np.abs(predict(candidates)[:, 0] - predict(mean[None, :])[0, 0]) > 0.5
    return background, candidates[away & moved][:10]


def deletion_auc(x: np.ndarray, order: np.ndarray, mean: np.ndarray) -> float:
    """Area under ``1 - progress`` of deleting features in ``order`` (see the module doc)."""
    steps = np.repeat(x[None, :], len(order) + 1, axis=0)
    for t in range(1, len(order) + 1):
        steps[t:, order[t - 1]] = mean[order[t - 1]]
    outputs = predict(steps)[:, 0]
    distance = np.abs(outputs - outputs[0])
    progress = distance / distance.max()
    curve = 1.0 - progress
    return float(np.sum((curve[1:] + curve[:-1]) / 2) / len(order))


Method = Callable[[np.ndarray, Predict, Background, int, int], Explanation]


@pytest.mark.parametrize("method", [permutation_shap, kernel_shap])
def test_shap_within_2048_evals_finds_the_three_informative_features(method: Method) -> None:
    background, rows = explained_rows()
    assert rows.shape == (10, N_FEATURES)
    mean = background.weights @ background.rows
    shap_aucs, random_aucs = [], []
    rng = np.random.default_rng(2)
    for index, x in enumerate(rows):
        explanation = method(x, predict, background, 2048, index)
        assert explanation.quality.n_evals <= 2048
        assert explanation.quality.additivity_error <= 1e-6
        magnitude = np.abs(explanation.attributions[:, 0])
        order = np.argsort(-magnitude, kind="stable")
        assert set(order[:3].tolist()) == INFORMATIVE
        shap_aucs.append(deletion_auc(x, order, mean))
        random_aucs += [deletion_auc(x, rng.permutation(N_FEATURES), mean) for _ in range(5)]
    # measured: about 0.25 for the SHAP order against 0.49 for random orders
    assert np.mean(shap_aucs) < 0.7 * np.mean(random_aucs)

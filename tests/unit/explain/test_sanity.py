"""Sanity check (Adebayo et al. 2018) for SHAP: attributions follow the model's weights.

A trained MLP's exact Shapley values are compared with those of the same network whose last
layer was re-drawn at random: if the explainer reflected the data rather than the model, the
two would agree. Their rank correlation must be at most 0.5.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from scipy.stats import spearmanr
from skl2onnx import to_onnx
from sklearn.neural_network import MLPRegressor

from openmaas.explain.background import summarize
from openmaas.explain.shapley import exact_shapley

FEATURES = 8


def _predictor(model: MLPRegressor):  # type: ignore[no-untyped-def]
    onnx_model = to_onnx(model, np.zeros((1, FEATURES), np.float32), target_opset=17)
    session = ort.InferenceSession(onnx_model.SerializeToString())
    name = session.get_inputs()[0].name

    def predict(rows: np.ndarray) -> np.ndarray:
        out = session.run(None, {name: rows.astype(np.float32)})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(rows), -1)

    return predict


def test_randomising_the_last_layer_changes_the_attributions() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, FEATURES))
    y = 3 * x[:, 0] - 2 * x[:, 1] ** 2 + x[:, 2] * x[:, 3]
    trained = MLPRegressor(hidden_layer_sizes=(32,), max_iter=2000, tol=1e-3, random_state=0).fit(
        x, y
    )
    background = summarize(x[:200], 8, seed=0)
    original = _predictor(trained)
    trained.coefs_[-1] = rng.normal(size=trained.coefs_[-1].shape)
    trained.intercepts_[-1] = rng.normal(size=trained.intercepts_[-1].shape)
    randomised = _predictor(trained)
    correlations = []
    for row in x[300:310]:
        before = exact_shapley(row, original, background, 4096).attributions[:, 0]
        after = exact_shapley(row, randomised, background, 4096).attributions[:, 0]
        correlations.append(spearmanr(np.abs(before), np.abs(after)).statistic)
    assert float(np.mean(correlations)) <= 0.5

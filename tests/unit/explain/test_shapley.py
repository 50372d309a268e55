"""Exact, permutation and kernel Shapley values: axioms, agreement, budgets, determinism."""

from __future__ import annotations

from functools import cache

import numpy as np
import onnxruntime as ort
import pytest

from openmaas.explain.background import summarize
from openmaas.explain.sampling import (
    kernel_minimum_cost,
    kernel_shap,
    permutation_pair_cost,
    permutation_shap,
)
from openmaas.explain.shapley import CHUNK_ROWS, exact_cost, exact_shapley
from openmaas.explain.types import Background, CostCapError, Explanation


class Recorder:
    """A predictor that counts the rows it is given and the largest single call."""

    def __init__(self, function: object) -> None:
        self.function = function
        self.rows = 0
        self.largest = 0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.rows += rows.shape[0]
        self.largest = max(self.largest, rows.shape[0])
        return self.function(rows)  # type: ignore[operator, no-any-return]


def uniform(rows: np.ndarray) -> Background:
    return Background(
        rows=rows, weights=np.full(rows.shape[0], 1.0 / rows.shape[0]), source="sample"
    )


def nonlinear(rows: np.ndarray) -> np.ndarray:
    """Two outputs with interactions, over as many features as the rows have."""
    m = rows.shape[1]
    mix = np.random.default_rng(42).normal(size=(m, m)) / np.sqrt(m)
    first = np.tanh(rows @ mix).sum(axis=1) + rows[:, 0] * rows[:, 1]
    second = np.sin(rows[:, 2]) * rows[:, 3] + 0.5 * rows[:, -1] ** 2
    return np.stack([first, second], axis=1)


@cache
def logistic_session() -> tuple[ort.InferenceSession, np.ndarray]:
    """A LogisticRegression on 6 features exported to ONNX (probabilities, no ZipMap)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    data = rng.normal(size=(400, 6))
    labels = (data[:, 0] - 2 * data[:, 1] + data[:, 2] * data[:, 3] > 0).astype(np.int64)
    model = LogisticRegression().fit(data.astype(np.float32), labels)
    onx = to_onnx(
        model,
        data[:1].astype(np.float32),
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, data


def logistic_predict(rows: np.ndarray) -> np.ndarray:
    session, _ = logistic_session()
    name = session.get_inputs()[0].name
    return np.asarray(
        session.run(["probabilities"], {name: rows.astype(np.float32)})[0], np.float64
    )


def local_accuracy(explanation: Explanation) -> float:
    total = explanation.base_values + explanation.attributions.sum(axis=0)
    return float(np.max(np.abs(total - explanation.prediction)))


# ---------------------------------------------------------------------------- exact


def test_exact_local_accuracy_on_1000_rows_of_an_onnx_logistic_regression() -> None:
    _, data = logistic_session()
    background = summarize(data, 16, seed=0)
    rows = np.random.default_rng(1).normal(size=(1000, 6))
    worst = 0.0
    for x in rows:
        explanation = exact_shapley(x, logistic_predict, background, max_evals=10_000)
        assert explanation.attributions.shape == (6, 2)
        assert explanation.quality.converged
        assert explanation.quality.standard_error is None
        assert explanation.quality.n_evals == exact_cost(6, 16)
        worst = max(worst, local_accuracy(explanation), explanation.quality.additivity_error or 0)
        # the two probabilities sum to 1, so the classes' attributions are opposite
        assert np.allclose(
            explanation.attributions[:, 0], -explanation.attributions[:, 1], atol=1e-6
        )
    assert worst <= 1e-6
    assert np.allclose(explanation.prediction, logistic_predict(rows[-1:])[0], atol=1e-6)
    assert np.allclose(
        explanation.base_values, background.weights @ logistic_predict(background.rows)
    )


def test_exact_shapley_of_a_linear_model_is_weight_times_gap_to_the_background_mean() -> None:
    rng = np.random.default_rng(3)
    w, c = rng.normal(size=7), 0.75
    rows = rng.normal(size=(9, 7))
    weights = rng.random(9)
    background = Background(rows=rows, weights=weights / weights.sum(), source="sample")
    x = rng.normal(size=7)
    explanation = exact_shapley(x, lambda r: (r @ w + c)[:, None], background, 10**6)
    expected = w * (x - background.weights @ rows)
    assert np.max(np.abs(explanation.attributions[:, 0] - expected)) <= 1e-9
    assert np.isclose(explanation.base_values[0], background.weights @ (rows @ w + c))


def test_exact_shapley_is_symmetric_and_gives_a_dummy_feature_nothing() -> None:
    def f(rows: np.ndarray) -> np.ndarray:  # features 0 and 1 symmetric; 3 unused
        return (rows[:, 0] * rows[:, 1] + np.exp(rows[:, 0] + rows[:, 1]) + rows[:, 2])[:, None]

    rng = np.random.default_rng(4)
    half = rng.normal(size=(5, 4))
    mirrored = half[:, [1, 0, 2, 3]]
    background = uniform(np.concatenate([half, mirrored]))
    x = np.array([0.7, 0.7, -1.2, 5.0])
    phi = exact_shapley(x, f, background, 10**6).attributions[:, 0]
    assert abs(phi[0] - phi[1]) <= 1e-12
    assert abs(phi[3]) <= 1e-12
    assert abs(phi[2]) > 0.1
    assert abs(phi[0]) > 0.1


def test_exact_cost_cap_and_chunking() -> None:
    assert exact_cost(3, 5) == 1 + 5 * 7
    background = uniform(np.random.default_rng(5).normal(size=(5, 3)))
    x = np.ones(3)
    with pytest.raises(CostCapError) as caught:
        exact_shapley(x, np.sin, background, max_evals=35)
    assert (caught.value.method, caught.value.needed, caught.value.cap) == ("exact", 36, 35)
    assert exact_shapley(x, np.sin, background, max_evals=36).quality.n_evals == 36
    big = uniform(np.random.default_rng(6).normal(size=(300, 5)))
    recorder = Recorder(nonlinear)
    explanation = exact_shapley(np.ones(5), recorder, big, max_evals=10**6)
    assert recorder.rows == explanation.quality.n_evals == exact_cost(5, 300) == 9301
    assert recorder.largest <= CHUNK_ROWS
    huge = uniform(np.random.default_rng(7).normal(size=(5000, 2)))  # one coalition > a chunk
    recorder = Recorder(np.sin)
    explanation = exact_shapley(np.ones(2), recorder, huge, max_evals=10**6)
    assert recorder.rows == explanation.quality.n_evals == 1 + 5000 * 3
    assert recorder.largest == CHUNK_ROWS
    assert explanation.quality.additivity_error <= 1e-9


def test_bad_shapes_and_weights_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="background rows"):
        exact_shapley(np.ones(3), np.sin, uniform(np.zeros((2, 4))), 100)
    with pytest.raises(ValueError, match="sum to 1"):
        exact_shapley(np.ones(2), np.sin, Background(np.zeros((2, 2)), np.ones(2), "sample"), 100)
    with pytest.raises(ValueError, match="predict returned"):
        exact_shapley(np.ones(2), lambda r: np.zeros((1, 1)), uniform(np.zeros((2, 2))), 100)


def test_exact_refuses_more_than_16_features_whatever_the_cap() -> None:
    background = uniform(np.zeros((1, 17)))
    with pytest.raises(CostCapError) as caught:
        exact_shapley(np.ones(17), nonlinear, background, max_evals=10**12)
    assert caught.value.method == "exact"
    assert caught.value.needed == exact_cost(17, 1)


# ---------------------------------------------------------------------------- sampled


def problem(m: int, k_bg: int = 5, seed: int = 7) -> tuple[np.ndarray, Background]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=m), uniform(rng.normal(size=(k_bg, m)))


@pytest.mark.parametrize("method", [permutation_shap, kernel_shap])
def test_sampled_methods_are_additive_and_spend_what_they_report(method: object) -> None:
    x, background = problem(10)
    recorder = Recorder(nonlinear)
    explanation = method(x, recorder, background, 3000, 0)  # type: ignore[operator]
    assert explanation.attributions.shape == (10, 2)
    assert explanation.quality.additivity_error <= 1e-6
    assert local_accuracy(explanation) <= 1e-6
    assert recorder.rows == explanation.quality.n_evals <= 3000
    assert explanation.parameters["seed"] == 0
    assert explanation.parameters["background_rows"] == 5


def test_kernel_with_every_coalition_equals_exact_shapley() -> None:
    x, background = problem(6)
    exact = exact_shapley(x, nonlinear, background, 10**6)
    kernel = kernel_shap(x, nonlinear, background, exact_cost(6, 5), seed=1)
    assert kernel.parameters["enumerated_sizes"] == [1, 2, 3, 4, 5]
    assert kernel.quality.n_evals == exact.quality.n_evals
    assert np.max(np.abs(kernel.attributions - exact.attributions)) <= 1e-9
    assert kernel.quality.standard_error == 0.0
    assert kernel.quality.converged


def test_permutation_of_two_features_is_exact() -> None:
    x, background = problem(2)
    exact = exact_shapley(x, lambda r: r[:, :1] * r[:, 1:] + r[:, :1], background, 10**6)
    sampled = permutation_shap(x, lambda r: r[:, :1] * r[:, 1:] + r[:, :1], background, 10**6, 3)
    assert sampled.parameters["permutations"] == 2
    assert np.max(np.abs(sampled.attributions - exact.attributions)) <= 1e-12


@pytest.mark.parametrize(
    ("method", "budget", "tolerance"), [(permutation_shap, 6000, 0.04), (kernel_shap, 2000, 0.02)]
)
def test_sampled_methods_are_close_to_exact(method: object, budget: int, tolerance: float) -> None:
    x, background = problem(10)
    exact = exact_shapley(x, nonlinear, background, 10**6).attributions
    scale = float(np.max(np.abs(exact)))
    for seed in range(3):
        explanation = method(x, nonlinear, background, budget, seed)  # type: ignore[operator]
        error = float(np.max(np.abs(explanation.attributions - exact)))
        assert error <= tolerance * scale
        # the reported standard error is of the right size
        assert error <= 5 * explanation.quality.standard_error


@pytest.mark.parametrize("method", [permutation_shap, kernel_shap])
def test_same_seed_same_answer_other_seed_other_answer(method: object) -> None:
    x, background = problem(9)
    first = method(x, nonlinear, background, 1500, 11)  # type: ignore[operator]
    again = method(x, nonlinear, background, 1500, 11)  # type: ignore[operator]
    other = method(x, nonlinear, background, 1500, 12)  # type: ignore[operator]
    assert np.array_equal(first.attributions, again.attributions)
    assert first.quality == again.quality
    assert not np.array_equal(first.attributions, other.attributions)


def test_permutation_cost_cap_is_one_pair() -> None:
    x, background = problem(8, k_bg=4)
    needed = 1 + 4 + permutation_pair_cost(8, 4)
    assert needed == 1 + 4 + 2 * 7 * 4
    with pytest.raises(CostCapError) as caught:
        permutation_shap(x, nonlinear, background, needed - 1, seed=0)
    assert (caught.value.method, caught.value.needed, caught.value.cap) == (
        "permutation",
        needed,
        needed - 1,
    )
    one_pair = permutation_shap(x, nonlinear, background, needed, seed=0)
    assert one_pair.parameters["permutations"] == 2
    assert one_pair.quality.n_evals == needed
    assert one_pair.quality.standard_error is None
    assert not one_pair.quality.converged
    more = permutation_shap(x, nonlinear, background, 1 + 4 + 5 * permutation_pair_cost(8, 4), 0)
    assert more.parameters["permutations"] == 10


def test_kernel_cost_cap_is_the_minimum() -> None:
    x, background = problem(8, k_bg=4)
    needed = kernel_minimum_cost(8, 4)
    assert needed == 1 + 4 + 4 * 16
    with pytest.raises(CostCapError) as caught:
        kernel_shap(x, nonlinear, background, needed - 1, seed=0)
    assert (caught.value.method, caught.value.needed) == ("kernel", needed)
    smallest = kernel_shap(x, nonlinear, background, needed, seed=0)
    assert smallest.quality.n_evals <= needed
    assert smallest.quality.additivity_error <= 1e-6


def test_converged_follows_the_standard_error() -> None:
    x, background = problem(5)
    plenty = kernel_shap(x, nonlinear, background, 10**5, seed=0)
    assert plenty.quality.converged
    scale = float(np.max(np.abs(plenty.prediction - plenty.base_values)))
    for budget, converged in ((6 + 3 * permutation_pair_cost(5, 5), False), (10**5, True)):
        sampled = permutation_shap(x, nonlinear, background, budget, seed=0)
        assert sampled.quality.standard_error is not None
        assert sampled.quality.converged == (sampled.quality.standard_error <= 0.01 * scale)
        assert sampled.quality.converged == converged


def test_one_feature_gets_the_whole_difference() -> None:
    x, background = np.array([2.0]), uniform(np.array([[0.0], [1.0]]))
    for explanation in (
        exact_shapley(x, np.square, background, 100),
        permutation_shap(x, np.square, background, 100, 0),
        kernel_shap(x, np.square, background, 100, 0),
    ):
        assert np.allclose(explanation.attributions, [[4.0 - 0.5]])
        assert explanation.quality.n_evals == 3


def test_many_permutation_pairs_are_merged_block_by_block() -> None:
    x, background = problem(4, k_bg=2)
    exact = exact_shapley(x, nonlinear, background, 10**6).attributions
    recorder = Recorder(nonlinear)
    sampled = permutation_shap(x, recorder, background, 200_000, seed=5)
    pairs = (200_000 - 3) // permutation_pair_cost(4, 2)
    assert sampled.parameters["permutations"] == 2 * pairs == 33_332  # four blocks of pairs
    assert recorder.rows == sampled.quality.n_evals == 3 + pairs * permutation_pair_cost(4, 2)
    assert sampled.quality.additivity_error <= 1e-9
    error = float(np.max(np.abs(sampled.attributions - exact)))
    assert sampled.quality.standard_error is not None
    assert sampled.quality.standard_error < 0.01
    assert error <= 5 * sampled.quality.standard_error

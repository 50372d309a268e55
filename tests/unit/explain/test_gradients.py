"""Integrated gradients: complete, capped, deterministic, exact on linear models, and sane."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

from openmaas.explain.gradients import integrated_gradients
from openmaas.explain.onnx_torch import TorchGraph, to_torch
from openmaas.explain.types import CostCapError
from tests.unit.explain.test_onnx_torch import Classified, digits_network, export_onnx

torch = pytest.importorskip("torch")


@dataclass(frozen=True)
class Trained:
    network: Any
    graph: TorchGraph  # the probabilities of the 10 digits
    images: np.ndarray  # [n, 1, 8, 8], in [0, 1]
    labels: np.ndarray


@pytest.fixture(scope="module")
def trained() -> Trained:
    """The small CNN, trained for two epochs (a few seconds) on the 8x8 digits (images/16)."""
    digits = load_digits()
    images = torch.tensor(digits.images / 16, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = digits_network()
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
        for _ in range(2):
            order = torch.randperm(len(labels))
            for first in range(0, len(labels), 64):
                rows = order[first : first + 64]
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(network(images[rows]), labels[rows])
                loss.backward()
                optimizer.step()
    network.eval()
    with torch.no_grad():
        accuracy = float((network(images).argmax(dim=1) == labels).float().mean())
    assert accuracy > 0.9
    model = export_onnx(Classified(network), torch.zeros(1, 1, 8, 8), ("label", "probs"))
    return Trained(network, to_torch(model, "probs"), images.numpy(), labels.numpy())


@pytest.mark.parametrize("quadrature", ["trapezoid", "simpson"])
def test_attributions_add_up_to_the_change_of_the_output(trained: Trained, quadrature: Any) -> None:
    for index in range(6):
        x = trained.images[index].astype(np.float64)
        target = int(trained.labels[index])
        explanation = integrated_gradients(
            x, trained.graph, baseline=None, target=target, max_evals=1025, quadrature=quadrature
        )
        quality = explanation.quality
        assert explanation.method == "integrated_gradients"
        assert explanation.attributions.shape == (1, 8, 8, 1)
        prediction = trained.graph.predict(x[None])[0, target]
        base = trained.graph.predict(np.zeros((1, 1, 8, 8)))[0, target]
        assert explanation.prediction.tolist() == pytest.approx([prediction], abs=1e-12)
        assert explanation.base_values.tolist() == pytest.approx([base], abs=1e-12)
        change = prediction - base
        gap = abs(explanation.attributions.sum() - change)
        assert quality.converged
        assert quality.convergence_delta is not None
        assert quality.convergence_delta <= 0.01
        assert gap <= 0.01 * abs(change)
        assert quality.convergence_delta == pytest.approx(gap / abs(change))
        assert quality.additivity_error is None
        steps = explanation.parameters["steps"]
        assert steps in (16, 32, 64, 128, 256, 512, 1024)
        assert quality.n_evals == steps + 1
        assert explanation.parameters == {
            "steps": steps,
            "target": target,
            "baseline": "zeros",
            "quadrature": quadrature,
        }
        assert np.all(explanation.attributions[x == 0] == 0)  # x = baseline there


def test_a_low_cap_stops_early_or_refuses(trained: Trained) -> None:
    x, target = trained.images[0].astype(np.float64), int(trained.labels[0])
    with pytest.raises(CostCapError) as caught:
        integrated_gradients(x, trained.graph, baseline=None, target=target, max_evals=16)
    assert (caught.value.method, caught.value.needed, caught.value.cap) == (
        "integrated_gradients",
        17,
        16,
    )
    capped = integrated_gradients(
        x, trained.graph, baseline=None, target=target, max_evals=40, tolerance=1e-12
    )
    assert not capped.quality.converged
    assert capped.quality.convergence_delta is not None
    assert capped.quality.convergence_delta > 1e-12
    assert capped.parameters["steps"] == 32  # 64 intervals would need 65 points
    assert capped.quality.n_evals == 33


def test_the_same_input_gives_the_same_explanation(trained: Trained) -> None:
    x, target = trained.images[7].astype(np.float64), int(trained.labels[7])
    first = integrated_gradients(x, trained.graph, baseline=None, target=target, max_evals=300)
    second = integrated_gradients(x, trained.graph, baseline=None, target=target, max_evals=300)
    assert np.array_equal(first.attributions, second.attributions)
    assert first.quality == second.quality
    assert first.parameters == second.parameters


def _linear_model(weights: np.ndarray, bias: np.ndarray, summed: bool) -> bytes:
    """``x @ weights.T + bias`` (``[n, k]``) or, with ``summed``, its row sums ``[n]``."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["z"], transB=1)]
    if summed:
        nodes.append(helper.make_node("ReduceSum", ["z", "axes"], ["y"], keepdims=0))
    else:
        nodes.append(helper.make_node("Identity", ["z"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", weights.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(weights.astype(np.float32), "w"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


def test_on_a_linear_model_it_is_input_minus_baseline_times_weight() -> None:
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(3, 5)).astype(np.float32).astype(np.float64)
    bias = rng.normal(size=3).astype(np.float32)
    x, baseline = rng.normal(size=5), rng.normal(size=5)
    graph = to_torch(_linear_model(weights, bias, summed=False), "y")
    explanation = integrated_gradients(x, graph, baseline=baseline, target=2, max_evals=100)
    assert np.allclose(explanation.attributions[:, 0], (x - baseline) * weights[2], atol=1e-12)
    assert explanation.parameters["baseline"] == "given"
    assert explanation.parameters["steps"] == 16
    assert explanation.quality.converged
    summed = to_torch(_linear_model(weights, bias, summed=True), "y")  # output [n]
    total = integrated_gradients(x, summed, baseline=None, target=0, max_evals=100)
    assert np.allclose(total.attributions[:, 0], x * weights.sum(axis=0), atol=1e-12)
    with pytest.raises(ValueError, match="target 1"):
        integrated_gradients(x, summed, baseline=None, target=1, max_evals=100)
    with pytest.raises(ValueError, match="baseline"):
        integrated_gradients(x, graph, baseline=np.zeros(4), target=0, max_evals=100)
    with pytest.raises(ValueError, match="shape"):
        integrated_gradients(np.zeros(4), graph, baseline=None, target=0, max_evals=100)


def _spearman(first: np.ndarray, second: np.ndarray) -> float:
    return float(spearmanr(np.abs(first).ravel(), np.abs(second).ravel()).statistic)


def test_randomising_the_last_layer_changes_the_attributions(trained: Trained) -> None:
    """Adebayo et al. (2018): attributions must depend on the model's learned weights.

    The baseline is mid-grey. With the default zero baseline, every pixel that is 0 gets 0
    from both models (x equals the baseline there); those shared zeros, about half of the
    pixels, are no information about the model but make the ranks agree (Spearman about
    0.92); over the other pixels the agreement is about 0.48, and about 0.4 with grey.
    """
    randomised = copy.deepcopy(trained.network)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        randomised[-1].reset_parameters()
    model = export_onnx(Classified(randomised), torch.zeros(1, 1, 8, 8), ("label", "probs"))
    random_graph = to_torch(model, "probs")
    grey = np.full((1, 8, 8), 0.5)
    agreement = []
    for index in range(10):
        x, target = trained.images[index].astype(np.float64), int(trained.labels[index])
        ours, theirs = (
            integrated_gradients(x, graph, baseline=grey, target=target, max_evals=257)
            for graph in (trained.graph, random_graph)
        )
        assert ours.quality.converged
        agreement.append(_spearman(ours.attributions, theirs.attributions))
    assert np.mean(agreement) <= 0.5

"""Exact TreeSHAP on ONNX tree ensembles: reading, evaluation against onnxruntime, exactness."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from openmaas.explain.treeshap import TreeEnsemble, load_tree_ensemble, tree_shap
from openmaas.explain.types import Background
from openmaas.runtimes.onnx_runtime import prepare

OPSETS = {"": 17, "ai.onnx.ml": 3}
M = 6  # features of the synthetic data
SKLEARN = ["dt_reg", "rf_reg", "gb_reg", "dt_clf", "rf_clf2", "rf_clf3", "gb_clf2", "gb_clf3"]


def _synthetic() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, M)).astype(np.float32)
    y = x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * np.abs(x[:, 3]) + 0.1 * rng.normal(size=300)
    return x, y


def _fit(kind: str) -> Any:
    x, y = _synthetic()
    two, three = (y > 0).astype(int), np.digitize(y, [-0.5, 0.5])
    models: dict[str, Callable[[], Any]] = {
        "dt_reg": lambda: DecisionTreeRegressor(max_depth=5, random_state=0).fit(x, y),
        "rf_reg": lambda: RandomForestRegressor(8, max_depth=4, random_state=0).fit(x, y),
        "gb_reg": lambda: GradientBoostingRegressor(n_estimators=10, max_depth=3).fit(x, y),
        "dt_clf": lambda: DecisionTreeClassifier(max_depth=5, random_state=0).fit(x, two),
        "rf_clf2": lambda: RandomForestClassifier(8, max_depth=4, random_state=0).fit(x, two),
        "rf_clf3": lambda: RandomForestClassifier(8, max_depth=4, random_state=0).fit(x, three),
        "gb_clf2": lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3).fit(x, two),
        "gb_clf3": lambda: GradientBoostingClassifier(n_estimators=6, max_depth=3).fit(x, three),
    }
    return models[kind]()


def _to_bytes(model: Any, n_features: int, double: bool = False) -> bytes:
    kind = DoubleTensorType if double else FloatTensorType
    onx = to_onnx(model, initial_types=[("float_input", kind([None, n_features]))],
                  target_opset=OPSETS)  # fmt: skip
    return bytes(onx.SerializeToString())


@cache
def _export(kind: str) -> bytes:
    return _to_bytes(_fit(kind), M)


def _load(data: bytes | ModelProto) -> TreeEnsemble:
    ensemble = load_tree_ensemble(data)
    assert ensemble is not None
    return ensemble


def _run(data: bytes, output: str, x: np.ndarray) -> np.ndarray:
    """onnxruntime's value of ``output``; a ZipMap's list of dicts becomes [n, classes]."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (value,) = session.run([output], {session.get_inputs()[0].name: x})
    if isinstance(value, list):
        return np.array([[row[key] for key in sorted(row)] for row in value])
    return np.asarray(value, dtype=np.float64)


def _background(seed: int, rows: int, n_features: int = M) -> Background:
    rng = np.random.default_rng(seed)
    weights = rng.random(rows) + 0.1
    data = rng.normal(size=(rows, n_features))
    return Background(data, weights / weights.sum(), "sample")


def _brute_force(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, background: Background
) -> np.ndarray:
    """Exact interventional Shapley values of ``f`` over all 2^M coalitions: ``[M, k]``."""
    m = x.shape[0]
    masks = np.array(list(itertools.product([False, True], repeat=m)))
    rows = np.where(masks[:, None, :], x[None, None, :], background.rows[None, :, :])
    values = f(rows.reshape(-1, m)).reshape(len(masks), background.rows.shape[0], -1)
    value = {tuple(mask): background.weights @ v for mask, v in zip(masks, values, strict=True)}
    phi = np.zeros((m, values.shape[-1]))
    for mask in value:
        size = sum(mask)
        for i in (i for i in range(m) if not mask[i]):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            phi[i] += weight * (value[(*mask[:i], True, *mask[i + 1 :])] - value[mask])
    return phi


@pytest.mark.parametrize("prepared", [False, True], ids=["skl2onnx", "prepared"])
@pytest.mark.parametrize("kind", SKLEARN)
def test_evaluation_matches_onnxruntime(kind: str, prepared: bool) -> None:
    data = prepare(_export(kind)).data if prepared else _export(kind)
    ensemble = _load(data)
    x = np.random.default_rng(1).normal(size=(400, M)).astype(np.float32)
    expected = _run(data, ensemble.output_name, x)
    assert ensemble.output_name == ("variable" if kind.endswith("reg") else "output_probability")
    k = 3 if kind.endswith("3") else 1 if kind.endswith("reg") else 2
    assert ensemble.n_outputs == expected.shape[1] == k
    np.testing.assert_allclose(ensemble.transform(ensemble.raw(x)), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", SKLEARN)
def test_tree_shap_equals_brute_force_shapley(kind: str) -> None:
    ensemble = _load(_export(kind))
    background = _background(2, 5)
    for seed in range(3):
        x = np.random.default_rng(10 + seed).normal(size=M)
        explanation = tree_shap(x, ensemble, background)
        expected = _brute_force(ensemble.raw, x, background)
        np.testing.assert_allclose(explanation.attributions, expected, rtol=0, atol=1e-9)
        assert explanation.attributions.shape == (M, ensemble.n_outputs)
        np.testing.assert_allclose(explanation.prediction, ensemble.raw(x[None])[0], atol=1e-12)
        base = background.weights @ ensemble.raw(background.rows)
        np.testing.assert_allclose(explanation.base_values, base, atol=1e-12)
        assert explanation.quality.additivity_error is not None
        assert explanation.quality.additivity_error <= 1e-12
    assert explanation.method == "tree"
    assert explanation.quality.n_evals == 1 + 5
    assert explanation.quality.converged
    space = "margin" if kind.startswith("gb_clf") else "output"
    assert explanation.parameters == {
        "output_space": space,
        "trees": ensemble.n_trees,
        "background_rows": 5,
    }


@pytest.mark.parametrize("kind", ["rf_clf2", "gb_reg"])
def test_local_accuracy_on_1000_rows(kind: str) -> None:
    data = _export(kind)
    ensemble = _load(data)
    rows = np.random.default_rng(3).normal(size=(1000, M)) * 1.5
    background = _background(4, 10)
    served = _run(data, ensemble.output_name, rows.astype(np.float32))
    worst = 0.0
    for row, out in zip(rows, served, strict=True):
        explanation = tree_shap(row, ensemble, background)
        total = explanation.base_values + explanation.attributions.sum(axis=0)
        worst = max(worst, float(np.max(np.abs(total - ensemble.raw(row[None])[0]))))
        np.testing.assert_allclose(ensemble.transform(total), out, atol=1e-5)
    assert worst <= 1e-6


def test_refuses_what_is_not_only_trees() -> None:
    x, y = _synthetic()
    pipeline = make_pipeline(StandardScaler(), DecisionTreeClassifier(max_depth=3))
    logistic = LogisticRegression().fit(x, y > 0)
    assert load_tree_ensemble(_to_bytes(pipeline.fit(x, y > 0), M)) is None
    assert load_tree_ensemble(_to_bytes(logistic, M)) is None
    assert load_tree_ensemble(b"not an onnx model") is None


def test_is_deterministic() -> None:
    ensemble, background = _load(_export("gb_clf3")), _background(5, 6)
    x = np.random.default_rng(6).normal(size=M)
    first, second = tree_shap(x, ensemble, background), tree_shap(x, ensemble, background)
    other = tree_shap(x, _load(_export("gb_clf3")), background)
    for e in (second, other):
        assert np.array_equal(first.attributions, e.attributions)
        assert np.array_equal(first.base_values, e.base_values)
        assert np.array_equal(first.prediction, e.prediction)


def test_double_input_and_checks_on_rows() -> None:
    model = _fit("rf_clf3")
    data = _to_bytes(model, M, double=True)
    ensemble = _load(data)
    x = np.random.default_rng(7).normal(size=(200, M))
    np.testing.assert_allclose(
        ensemble.transform(ensemble.raw(x)), _run(data, ensemble.output_name, x), atol=1e-9
    )
    background = _background(8, 4)
    with pytest.raises(ValueError, match="one row"):
        tree_shap(np.zeros(M + 1), ensemble, background)
    with pytest.raises(ValueError, match="background rows"):
        tree_shap(np.zeros(M), ensemble, _background(8, 4, n_features=M - 1))
    with pytest.raises(ValueError, match="rows must be"):
        ensemble.raw(np.zeros(M))


def test_breast_cancer_demo_forest() -> None:
    cancer = load_breast_cancer()
    data = cancer.data.astype(np.float32)
    forest = RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0)
    raw = _to_bytes(forest.fit(data, cancer.target), 30)
    ensemble = _load(prepare(raw).data)
    assert (ensemble.n_trees, ensemble.n_features, ensemble.n_outputs) == (50, 30, 2)
    picks = np.random.default_rng(9).choice(len(data), 8, replace=False)
    background = Background(data[picks].astype(np.float64), np.full(8, 1 / 8), "sample")
    rows = data[:40].astype(np.float64)
    served = _run(raw, ensemble.output_name, data[:40])
    start = time.perf_counter()
    explanations = [tree_shap(row, ensemble, background) for row in rows]
    per_row = (time.perf_counter() - start) / len(rows)
    print(f"breast-cancer forest: {1000 * per_row:.2f} ms per row (8 background rows)")
    for explanation, out in zip(explanations, served, strict=True):
        assert explanation.quality.additivity_error is not None
        assert explanation.quality.additivity_error <= 1e-6
        assert explanation.parameters["output_space"] == "output"
        np.testing.assert_allclose(explanation.prediction, out, atol=1e-5)
        np.testing.assert_allclose(explanation.attributions.sum(axis=1), 0, atol=1e-12)


# Hand-built graphs: every branch mode, NaN routing, aggregates, transforms, layouts.

_TREE_NODES = {  # two trees; feature 0 repeats on a path of tree 0
    "nodes_treeids": [0] * 7 + [1] * 5,
    "nodes_nodeids": [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4],
    "nodes_featureids": [0, 1, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0],
    "nodes_values": [0.0, 0.5, 1.0, 0, 0, 0, 0, 1.0, 0, -0.5, 0, 0],
    "nodes_truenodeids": [1, 3, 5, 0, 0, 0, 0, 1, 0, 3, 0, 0],
    "nodes_falsenodeids": [2, 4, 6, 0, 0, 0, 0, 2, 0, 4, 0, 0],
}
_LEAVES = [(0, 3), (0, 4), (0, 5), (0, 6), (1, 1), (1, 3), (1, 4)]
_IS_LEAF = [False, False, False, True, True, True, True, False, True, False, True, True]


def _tree_model(op: str, scores: int, extra: dict[str, Any], modes: list[str],
                entries: list[tuple[int, int, int]] | None = None,
                values: list[float] | None = None) -> ModelProto:  # fmt: skip
    """A 3-feature, 2-tree graph; ``entries`` are (tree, node, score) of the leaf weights."""
    rng = np.random.default_rng(len(modes) + scores)
    entries = entries or [(t, n, s) for t, n in _LEAVES for s in range(scores)]
    weights = values or [round(float(w), 3) for w in rng.uniform(-1, 1, len(entries))]
    split = iter(modes)
    attrs: dict[str, Any] = dict(_TREE_NODES)
    attrs["nodes_modes"] = ["LEAF" if leaf else next(split) for leaf in _IS_LEAF]
    attrs["nodes_missing_value_tracks_true"] = [1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    prefix = "target" if op == "TreeEnsembleRegressor" else "class"
    for i, name in enumerate(("treeids", "nodeids", "ids")):
        attrs[f"{prefix}_{name}"] = [e[i] for e in entries]
    attrs[f"{prefix}_weights"] = weights
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, None])]
    names = ["Y"]
    if op == "TreeEnsembleClassifier":
        attrs["classlabels_int64s"] = list(range(scores))
        outputs.insert(0, helper.make_tensor_value_info("label", TensorProto.INT64, [None]))
        names = ["label", "Y"]
    else:
        attrs["n_targets"] = scores
    node = helper.make_node(op, ["X"], names, domain="ai.onnx.ml", **{**attrs, **extra})
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])]
    graph = helper.make_graph([node], "trees", inputs, outputs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    return helper.make_model(graph, opset_imports=opsets)


def _grid_rows(n: int, seed: int) -> np.ndarray:
    """Rows that sit on thresholds and hold NaNs, so every comparison's edge is exercised."""
    grid = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0, np.nan])
    return np.random.default_rng(seed).choice(grid, size=(n, 3)).astype(np.float32)


def _check_against_onnxruntime(model: ModelProto, atol: float = 1e-5) -> TreeEnsemble:
    """Evaluation equals onnxruntime's; TreeSHAP equals brute force, NaNs included."""
    ensemble = _load(model)
    data = model.SerializeToString()
    x = _grid_rows(300, 11)
    served = _run(data, "Y", x)
    np.testing.assert_allclose(ensemble.transform(ensemble.raw(x)), served, rtol=0, atol=atol)
    rows = _grid_rows(5, 12).astype(np.float64)
    background = Background(rows, np.array([0.1, 0.2, 0.3, 0.15, 0.25]), "sample")
    for row in _grid_rows(4, 13).astype(np.float64):
        explanation = tree_shap(row, ensemble, background)
        expected = _brute_force(ensemble.raw, row, background)
        np.testing.assert_allclose(explanation.attributions, expected, rtol=0, atol=1e-9)
    return ensemble


MODES_A = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ"]
MODES_B = ["BRANCH_NEQ", "BRANCH_EQ", "BRANCH_GT", "BRANCH_LT", "BRANCH_NEQ"]


@pytest.mark.parametrize("modes", [MODES_A, MODES_B], ids=["leq-lt-gte-gt-eq", "neq-eq-gt-lt"])
@pytest.mark.parametrize(
    ("scores", "extra", "space"),
    [
        (1, {"base_values": [0.5]}, "output"),
        (1, {"post_transform": "LOGISTIC"}, "output"),  # onnxruntime ignores it on 1 target
        (
            2,
            {
                "aggregate_function": "AVERAGE",
                "post_transform": "LOGISTIC",
                "base_values": [0.1, -0.2],
            },
            "margin",
        ),
        (3, {"post_transform": "SOFTMAX"}, "margin"),
        (3, {"post_transform": "SOFTMAX_ZERO"}, "margin"),
    ],
)
def test_regressor_graphs_match_onnxruntime(
    modes: list[str], scores: int, extra: dict[str, Any], space: str
) -> None:
    ensemble = _check_against_onnxruntime(
        _tree_model("TreeEnsembleRegressor", scores, extra, modes)
    )
    assert ensemble.output_space == space
    assert ensemble.n_outputs == scores


def test_probit_regressor_matches_onnxruntime() -> None:
    values = [0.1, 0.2, 0.3, 0.4, 0.15, 0.35, 0.25]
    model = _tree_model(
        "TreeEnsembleRegressor", 1, {"post_transform": "PROBIT"}, MODES_A, values=values
    )
    assert _check_against_onnxruntime(model, atol=1e-4).post_transform == "PROBIT"


@pytest.mark.parametrize(
    ("scores", "extra", "entries", "positive"),
    [
        (2, {}, [(t, n, 0) for t, n in _LEAVES], False),  # one score s: [-s, s]
        (2, {"base_values": [0.2]}, [(t, n, 0) for t, n in _LEAVES], True),  # [1-s, s]
        (
            2,
            {"post_transform": "LOGISTIC", "base_values": [-0.3]},
            [(t, n, 0) for t, n in _LEAVES],
            False,
        ),
        (2, {"post_transform": "SOFTMAX"}, None, False),  # both columns scored
        (3, {"post_transform": "SOFTMAX_ZERO", "base_values": [0.1, 0.0, -0.1]}, None, False),
    ],
)
def test_classifier_graphs_match_onnxruntime(
    scores: int, extra: dict[str, Any], entries: Any, positive: bool
) -> None:
    values = [0.1, 0.2, 0.3, 0.4, 0.15, 0.35, 0.25] if positive else None
    model = _tree_model("TreeEnsembleClassifier", scores, extra, MODES_A, entries, values)
    assert _check_against_onnxruntime(model).n_outputs == scores


def test_refuses_layouts_it_does_not_reproduce() -> None:
    single = [(t, n, 0) for t, n in _LEAVES]
    refused = [
        _tree_model("TreeEnsembleRegressor", 1, {"aggregate_function": "MIN"}, MODES_A),
        _tree_model("TreeEnsembleClassifier", 2, {"post_transform": "PROBIT"}, MODES_A, single),
        _tree_model("TreeEnsembleClassifier", 2, {"base_values": [0.1, 0.2]}, MODES_A, single),
        # class 1 scored on some leaves only: onnxruntime's layout changes from row to row
        _tree_model("TreeEnsembleClassifier", 2, {}, MODES_A, [*single, (0, 3, 1)]),
        # a base value onnxruntime adds only when a leaf scored that target
        _tree_model(
            "TreeEnsembleRegressor",
            2,
            {"base_values": [0.0, 1.0]},
            MODES_A,
            [(t, n, 0) for t, n in _LEAVES] + [(0, 3, 1)],
        ),
    ]
    for model in refused:
        assert load_tree_ensemble(model) is None
    two_inputs = _tree_model("TreeEnsembleRegressor", 1, {}, MODES_A)
    two_inputs.graph.input.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1]))
    assert load_tree_ensemble(two_inputs) is None


def test_cast_before_the_trees_rounds_like_onnxruntime() -> None:
    model = _tree_model("TreeEnsembleRegressor", 2, {}, MODES_A)
    graph = model.graph
    graph.node[0].input[0] = "X32"
    graph.node.insert(0, helper.make_node("Cast", ["X64"], ["X32"], to=TensorProto.FLOAT))
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("X64", TensorProto.DOUBLE, [None, 3]))
    ensemble = _load(model)
    near = np.array([1.0, 1.0, -0.5])  # thresholds that rows with x0 > 0 meet
    x = near + np.random.default_rng(14).normal(size=(300, 3)) * 1e-8
    served = _run(model.SerializeToString(), "Y", x)
    np.testing.assert_allclose(ensemble.raw(x), served, atol=1e-6)


def _v5_model(post: int, n_targets: int, aggregate: int, member: bool) -> ModelProto:
    """TreeEnsemble (ai.onnx.ml 5): tree 0 splits f0 then f1; tree 1 is one split on f2."""
    attrs: dict[str, Any] = {
        "n_targets": n_targets, "aggregate_function": aggregate, "post_transform": post,
        "tree_roots": [0, 2], "nodes_featureids": [0, 1, 2],
        "nodes_splits": numpy_helper.from_array(np.array([0.0, 0.5, 0.25], np.float32)),
        "nodes_modes": numpy_helper.from_array(np.array([0, 1, 6 if member else 3], np.uint8)),
        "nodes_truenodeids": [1, 0, 3], "nodes_trueleafs": [0, 1, 1],
        "nodes_falsenodeids": [2, 1, 4], "nodes_falseleafs": [1, 1, 1],
        "nodes_missing_value_tracks_true": [1, 0, 0],
        "leaf_targetids": [0, 1, 0, 1, 0] if n_targets == 2 else [0] * 5,
        "leaf_weights": numpy_helper.from_array(
            np.array([0.1, 0.2, 0.3, 0.15, 0.25], np.float32)
        ),
    }  # fmt: skip
    if member:
        values = np.array([-1.0, 2.0, np.nan], np.float32)
        attrs["membership_values"] = numpy_helper.from_array(values)
    node = helper.make_node("TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph(
        [node], "v5",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n_targets])],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)]
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize(
    ("post", "n_targets", "aggregate", "member"),
    [(0, 2, 1, False), (0, 2, 0, True), (3, 2, 1, False), (4, 1, 0, False), (2, 1, 1, True)],
)
def test_opset5_tree_ensemble_matches_onnxruntime(
    post: int, n_targets: int, aggregate: int, member: bool
) -> None:
    model = _v5_model(post, n_targets, aggregate, member)
    _check_against_onnxruntime(model, atol=1e-4 if post == 4 else 1e-5)


def test_opset5_refuses_the_transform_codes_onnxruntime_swaps() -> None:
    for post in (1, 2):
        assert load_tree_ensemble(_v5_model(post, 2, 1, False)) is None


def test_double_thresholds_as_tensors_match_onnxruntime() -> None:
    """ai.onnx.ml 3's ``*_as_tensor`` doubles: 0.1 splits where float32(0.1) would not."""
    attrs: dict[str, Any] = {
        "nodes_treeids": [0, 0, 0], "nodes_nodeids": [0, 1, 2], "nodes_featureids": [0, 0, 0],
        "nodes_modes": ["BRANCH_LEQ", "LEAF", "LEAF"],
        "nodes_values_as_tensor": numpy_helper.from_array(np.array([0.1, 0.0, 0.0])),
        "nodes_truenodeids": [1, 0, 0], "nodes_falsenodeids": [2, 0, 0],
        "target_treeids": [0, 0], "target_nodeids": [1, 2], "target_ids": [0, 0],
        "target_weights_as_tensor": numpy_helper.from_array(np.array([0.25, -0.5])),
        "n_targets": 1, "base_values_as_tensor": numpy_helper.from_array(np.array([1.0])),
    }  # fmt: skip
    node = helper.make_node("TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph(
        [node], "double",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    x = np.array([[0.1], [float(np.float32(0.1))], [0.0999999], [0.2]])
    ensemble = _load(model)
    np.testing.assert_allclose(ensemble.raw(x)[:, 0], [1.25, 0.5, 1.25, 0.5])
    np.testing.assert_allclose(ensemble.raw(x), _run(model.SerializeToString(), "Y", x))

"""Exact interventional TreeSHAP for tree ensembles stored as ONNX graphs.

:func:`load_tree_ensemble` reads a graph that is one tree ensemble (see
:mod:`openmaas.explain._trees` for what qualifies); :func:`tree_shap` explains one row of it
against a weighted background, exactly: no sampling, no node covers.

For one background row ``b`` and one tree, the hybrid row ``(x on S, b elsewhere)`` reaches a
leaf exactly when every split on the way lets it through. A split that ``x`` and ``b`` pass
alike says nothing about ``S``; one only ``x`` passes needs its feature in ``S``; one only
``b`` passes needs it out. So a leaf with value ``v`` is reached for the coalitions that hold
all of a set ``A`` (``a`` features) and none of ``B`` (``c`` features), and (if ``A`` and ``B``
are disjoint) that game's Shapley values are ``v (a-1)! c! / (a+c)!`` for each feature of ``A``
and ``-v a! (c-1)! / (a+c)!`` for each of ``B``. Summed over leaves, trees and background rows
(with their weights) this is the exact interventional Shapley value of the summed leaf values;
an affine map (base values, AVERAGE, a binary classifier's ``[1-p, p]``) carries it to the
explained columns. Every root-to-leaf path is flattened once at load time, so one row costs a
few vectorised passes over all paths per block of background rows.

The explained columns are those before ``post_transform``: the model's output itself when
onnxruntime applies no transform (``output_space`` "output", e.g. a random forest's
probabilities), else the margin (``"margin"``, e.g. a boosted classifier's log-odds).
``n_evals`` counts ``1 +`` the background rows: the tree walks stand in for model evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from openmaas.explain._trees import LEAF, Forest, read_forest
from openmaas.explain.types import Background, Explanation, Quality

__all__ = ["MAX_DEPTH", "MAX_PATH_STEPS", "TreeEnsemble", "load_tree_ensemble", "tree_shap"]

MAX_PATH_STEPS = 20_000_000  # split steps on all root-to-leaf paths together; more: refused
MAX_DEPTH = 256  # splits from a root to a leaf; deeper trees are explained model-agnostically
_BLOCK = 1 << 20  # elements of one vectorised block (rows x nodes, or rows x path steps)
_COMPARE = (np.less_equal, np.less, np.greater_equal, np.greater, np.equal, np.not_equal)


@dataclass(frozen=True, eq=False)
class _Paths:
    """Every root-to-leaf path (of a non-zero leaf) as flat arrays of its split steps."""

    node: np.ndarray  # int64 [P]: the split node of each step
    go_true: np.ndarray  # bool [P]: the branch the path takes there
    feature: np.ndarray  # int64 [P]
    path: np.ndarray  # int64 [P]: the path the step is on
    first: np.ndarray  # int64 [P]: the step where that feature first occurs on the same path
    leaf: np.ndarray  # int64 [L]: the leaf each path ends at
    depth: int  # most nodes from a root to a leaf
    binom: np.ndarray  # float64 [D+1, D+1]: binomial coefficients up to the longest path


def _paths(forest: Forest) -> _Paths | None:
    """Flatten the paths; None for a cycle or more than :data:`MAX_PATH_STEPS` steps."""
    nodes = forest.nodes
    zero_leaf = ~np.any(forest.leaf_values != 0, axis=1)
    steps: list[tuple[int, bool, int, int, int]] = []  # node, go_true, feature, path, first
    leaves: list[int] = []
    depth, limit, visits = 0, nodes.mode.shape[0], 0
    for root in nodes.roots.tolist():
        stack: list[tuple[int, int, tuple[tuple[int, bool], ...]]] = [(root, 0, ())]
        while stack:
            node, level, trail = stack.pop()
            visits += 1
            if level > min(limit, MAX_DEPTH) or visits + len(steps) > MAX_PATH_STEPS:
                # a cycle, a graph whose paths blow up (shared subtrees), or trees so deep
                # that the trails held while walking them would not fit in memory
                return None
            depth = max(depth, level)
            if nodes.mode[node] == LEAF:
                if trail and not zero_leaf[node]:
                    seen: dict[int, int] = {}
                    for split, way in trail:
                        feature = int(nodes.feature[split])
                        first = seen.setdefault(feature, len(steps))
                        steps.append((split, way, feature, len(leaves), first))
                    leaves.append(node)
                continue
            yes, no = int(nodes.true_child[node]), int(nodes.false_child[node])
            if yes == no:  # both branches lead to the same place: no condition
                stack.append((yes, level + 1, trail))
            else:
                stack.append((no, level + 1, (*trail, (node, False))))
                stack.append((yes, level + 1, (*trail, (node, True))))
    table = np.array(steps, dtype=np.int64).reshape(-1, 5)
    longest = int(np.bincount(table[:, 3]).max()) if table.shape[0] else 0
    binom = np.zeros((longest + 1, longest + 1))
    binom[:, 0] = 1.0
    for n in range(1, longest + 1):
        binom[n, 1 : n + 1] = binom[n - 1, 0:n] + binom[n - 1, 1 : n + 1]
    return _Paths(
        node=table[:, 0],
        go_true=table[:, 1].astype(bool),
        feature=table[:, 2],
        path=table[:, 3],
        first=table[:, 4],
        leaf=np.array(leaves, dtype=np.int64),
        depth=depth,
        binom=binom,
    )


def _probit(p: np.ndarray) -> np.ndarray:
    """sqrt(2) erfinv(2p - 1) with the approximation onnxruntime uses (Winitzki, a = 0.147)."""
    x = 2.0 * p - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log((1.0 - x) * (1.0 + x))
        v = 2.0 / (3.14159 * 0.147) + 0.5 * log
        root = np.sqrt(-v + np.sqrt(v * v - log / 0.147))
    return np.float64(1.41421356) * np.where(x < 0, -root, root)


class TreeEnsemble:
    """A tree ensemble read from an ONNX graph (made by :func:`load_tree_ensemble`).

    ``output_name`` is the graph output its values leave by (a classifier's probabilities or
    scores, never its label), ``n_outputs`` (k) that output's columns, ``n_features`` (M) the
    input's, ``post_transform`` what onnxruntime applies after :meth:`raw`.
    """

    def __init__(self, forest: Forest, paths: _Paths) -> None:
        self._forest, self._paths = forest, paths
        nodes = forest.nodes
        self._splits = np.flatnonzero(nodes.mode != LEAF)
        split_modes = nodes.mode[self._splits]
        self._by_mode = [np.flatnonzero(split_modes == code) for code in range(len(_COMPARE))]
        self._members = [  # (column among the splits, the set) of each BRANCH_MEMBER node
            (int(np.searchsorted(self._splits, node)), values)
            for node, values in nodes.members.items()
        ]
        self.output_name: str = forest.output_name
        self.n_outputs: int = int(forest.coef.shape[1])
        self.n_features: int = forest.n_features
        self.n_trees: int = int(nodes.roots.shape[0])
        self.post_transform: str = forest.post_transform

    @property
    def output_space(self) -> str:
        """ "output" when :meth:`raw` is the model's output itself, else "margin"."""
        return "output" if self.post_transform == "NONE" else "margin"

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Float64 ``[n, k]`` columns before ``post_transform`` of the rows ``x`` ``[n, M]``."""
        rows = self._rows(x)
        block = max(1, _BLOCK // max(1, self._splits.size))
        parts = [
            self._columns(rows[i : i + block], self._decide(rows[i : i + block]))
            for i in range(0, rows.shape[0], block)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.n_outputs))

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Apply ``post_transform`` to :meth:`raw`'s columns, as onnxruntime does."""
        values = np.asarray(raw, dtype=np.float64)
        if self.post_transform == "LOGISTIC":
            return np.asarray(0.5 * (1.0 + np.tanh(0.5 * values)))  # 1 / (1 + e^-x), stably
        if self.post_transform == "SOFTMAX":
            exps = np.exp(values - values.max(axis=-1, keepdims=True))
            return np.asarray(exps / exps.sum(axis=-1, keepdims=True))
        if self.post_transform == "SOFTMAX_ZERO":
            peak = values.max(axis=-1, keepdims=True)
            kept = np.abs(values) > 1e-7
            with np.errstate(divide="ignore", invalid="ignore"):  # all zero: NaN, as served
                exps = np.where(kept, np.exp(values - peak), values * np.exp(-peak))
                return np.asarray(exps / np.where(kept, exps, 0.0).sum(axis=-1, keepdims=True))
        if self.post_transform == "PROBIT":
            return _probit(values)
        return values.copy()

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """``x`` as float64 ``[n, M]``, rounded as the graph rounds it on the way in."""
        rows = np.asarray(x, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"rows must be [n, {self.n_features}], not {rows.shape}")
        for dtype in self._forest.roundings:
            rows = rows.astype(dtype).astype(np.float64)
        return rows

    def _decide(self, rows: np.ndarray) -> np.ndarray:
        """Bool ``[n, nodes]``: does each row take each split's true branch?"""
        nodes = self._forest.nodes
        decided = np.zeros((rows.shape[0], nodes.mode.shape[0]), dtype=bool)
        splits = self._splits
        values = rows[:, nodes.feature[splits]]
        thresholds = nodes.threshold[splits]
        result = np.zeros(values.shape, dtype=bool)
        for compare, cols in zip(_COMPARE, self._by_mode, strict=True):
            if cols.size == splits.size:
                result = compare(values, thresholds)
            elif cols.size:
                result[:, cols] = compare(values[:, cols], thresholds[cols])
        for col, members in self._members:
            result[:, col] = np.isin(values[:, col], members)
        result |= np.isnan(values) & nodes.missing_true[splits]
        decided[:, splits] = result
        return decided

    def _columns(self, rows: np.ndarray, decided: np.ndarray) -> np.ndarray:
        """Walk every tree for every row (decisions given): float64 ``[n, k]``."""
        forest, nodes = self._forest, self._forest.nodes
        scores = np.zeros((rows.shape[0], forest.leaf_values.shape[1]))
        block = max(1, _BLOCK // max(1, self.n_trees))
        for start in range(0, rows.shape[0], block):
            chunk = decided[start : start + block]
            at = np.broadcast_to(nodes.roots, (chunk.shape[0], self.n_trees)).copy()
            index = np.arange(chunk.shape[0])[:, None]
            for _ in range(self._paths.depth):
                at = np.where(chunk[index, at], nodes.true_child[at], nodes.false_child[at])
            scores[start : start + block] = forest.leaf_values[at].sum(axis=1)
        return np.asarray(scores @ forest.coef + forest.offset)


def load_tree_ensemble(model: bytes | onnx.ModelProto) -> TreeEnsemble | None:
    """The tree ensemble an ONNX model is, or None when it is anything else.

    ``None`` tells the caller to fall back on model-agnostic SHAP: a graph with anything but
    ``Identity``/``Cast`` before the tree node and ``Identity``/``Cast``/``ZipMap`` after it,
    an aggregate other than SUM/AVERAGE, or an output layout onnxruntime computes in a way
    this module does not reproduce. Raw skl2onnx graphs and OpenMaaS's prepared (ZipMap-free)
    ones both load.
    """
    if isinstance(model, bytes | bytearray):
        try:
            model = onnx.load_model_from_string(bytes(model))
        except (DecodeError, ValueError, RuntimeError):
            return None
    forest = read_forest(model)
    paths = None if forest is None else _paths(forest)
    return None if forest is None or paths is None else TreeEnsemble(forest, paths)


def _phi_scores(ensemble: TreeEnsemble, decided: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Interventional Shapley values of the summed leaf values, ``[M, scores]``.

    ``decided[0]`` are the explained row's decisions, ``decided[1:]`` the background's.
    """
    p, forest = ensemble._paths, ensemble._forest
    n_steps, n_paths = p.node.shape[0], p.leaf.shape[0]
    x_passes = decided[0, p.node] == p.go_true
    total = np.zeros(n_steps)  # per step: sum over background rows of its feature's share
    block = max(1, _BLOCK // max(1, n_steps))
    for start in range(0, decided.shape[0] - 1, block):
        b_passes = decided[1 + start : 1 + start + block, p.node] == p.go_true
        n = b_passes.shape[0]
        need_in, need_out = x_passes & ~b_passes, b_passes & ~x_passes
        step_key = p.first + (np.arange(n) * n_steps)[:, None]
        path_key = p.path + (np.arange(n) * n_paths)[:, None]
        size = n * n_steps
        in_a = (np.bincount(step_key[need_in], minlength=size) > 0).reshape(n, n_steps)
        in_b = (np.bincount(step_key[need_out], minlength=size) > 0).reshape(n, n_steps)
        blocked = ~(x_passes | b_passes) | (in_a & in_b)
        dead = np.bincount(path_key[blocked], minlength=n * n_paths).reshape(n, n_paths) > 0
        a = np.bincount(path_key.ravel(), in_a.ravel(), n * n_paths).reshape(n, n_paths)
        c = np.bincount(path_key.ravel(), in_b.ravel(), n * n_paths).reshape(n, n_paths)
        a_, c_ = a.astype(np.int64), c.astype(np.int64)
        w = weights[start : start + n, None] * ~dead
        share_in = np.where(a_ > 0, w / (np.maximum(a_, 1) * p.binom[a_ + c_, a_]), 0.0)
        share_out = np.where(c_ > 0, w / (np.maximum(c_, 1) * p.binom[a_ + c_, c_]), 0.0)
        total += (in_a * share_in[:, p.path] - in_b * share_out[:, p.path]).sum(axis=0)
    values = forest.leaf_values[p.leaf[p.path]]  # [P, scores]
    m = ensemble.n_features
    columns = [np.bincount(p.feature, total * values[:, s], m) for s in range(values.shape[1])]
    return np.stack(columns, axis=1) if columns else np.zeros((m, 0))


def tree_shap(x: np.ndarray, ensemble: TreeEnsemble, background: Background) -> Explanation:
    """Exact interventional TreeSHAP of one row ``x`` ``[M]`` against ``background``.

    Attributions are ``[M, k]``; ``base_values`` (the weighted mean over the background) and
    ``prediction`` are ``[k]``, all in the space ``parameters["output_space"]`` names.
    """
    m = ensemble.n_features
    row = np.asarray(x, dtype=np.float64)
    if row.size != m or row.ndim > 2 or (row.ndim == 2 and row.shape[0] != 1):
        raise ValueError(f"x must be one row of shape [{m}], not {row.shape}")
    bg = np.asarray(background.rows, dtype=np.float64)
    weights = np.asarray(background.weights, dtype=np.float64).reshape(-1)
    if bg.ndim < 1 or bg.shape[0] < 1 or bg.size != bg.shape[0] * m:
        raise ValueError(f"background rows have shape {bg.shape}; expected [K >= 1, {m}]")
    if weights.shape[0] != bg.shape[0] or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError("background weights must be K non-negative numbers with a positive sum")
    weights = weights / weights.sum()
    rows = ensemble._rows(np.concatenate([row.reshape(1, m), bg.reshape(-1, m)], axis=0))
    decided = ensemble._decide(rows)
    columns = ensemble._columns(rows, decided)
    prediction, base = columns[0], weights @ columns[1:]
    phi = _phi_scores(ensemble, decided, weights) @ ensemble._forest.coef
    error = float(np.max(np.abs(base + phi.sum(axis=0) - prediction)))
    return Explanation(
        method="tree",
        attributions=phi,
        base_values=base,
        prediction=prediction,
        quality=Quality(n_evals=1 + bg.shape[0], converged=True, additivity_error=error),
        parameters={
            "output_space": ensemble.output_space,
            "trees": ensemble.n_trees,
            "background_rows": int(bg.shape[0]),
        },
    )

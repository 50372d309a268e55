"""Reading a tree ensemble out of an ONNX graph, as onnxruntime evaluates it.

Accepted: one input tensor ``[N, M]`` (float or double), reaching one ``ai.onnx.ml`` tree node
(``TreeEnsembleRegressor``/``TreeEnsembleClassifier`` opsets 1-3, or ``TreeEnsemble`` opset 5)
through nothing but ``Identity``/``Cast``; after the node only ``Identity``, ``Cast`` and
``ZipMap``. Anything else, and every layout whose output onnxruntime does not compute as an
affine map of the summed leaf values followed by one fixed ``post_transform``, is refused
(``None``): the caller then explains the model without looking inside it.

The result, :class:`Forest`, flattens all trees into node arrays; ``leaf_values @ coef +
offset`` (summed over the leaves a row reaches) are the output's columns before
``post_transform``. The layouts follow onnxruntime, measured rather than read from the spec:
a one-target regressor ignores every transform but PROBIT; a binary classifier that scores
only class 0 outputs ``[1-s, s]`` (all weights >= 0) or ``[-s, s]``, with ``LOGISTIC`` the
only transform it applies; for ``TreeEnsemble`` (opset 5) onnxruntime 1.32 reads
``post_transform`` 1 as LOGISTIC and 2 as SOFTMAX, the spec the other way round, so a
multi-target one with either is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["LEAF", "MEMBER", "Forest", "Nodes", "read_forest"]

# Node modes, numbered as TreeEnsemble (opset 5) numbers them; LEAF is ours.
_MODE_NAMES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ")
MEMBER, LEAF = 6, 7
_TRANSFORMS_V5 = ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT")
_TRANSFORMS = frozenset(_TRANSFORMS_V5)
_FLOATS: dict[int, np.dtype[Any]] = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
}
_ML = "ai.onnx.ml"
_TREE_OPS = ("TreeEnsembleRegressor", "TreeEnsembleClassifier", "TreeEnsemble")
# (leaf values [nodes, scores], coef [scores, k], offset [k], post_transform)
_Layout = tuple[np.ndarray, np.ndarray, np.ndarray, str]


@dataclass(frozen=True, eq=False)
class Nodes:
    """Every node of every tree, flattened: position ``i`` of each array is one node."""

    feature: np.ndarray  # int64 [nodes]; 0 at leaves
    threshold: np.ndarray  # float64 [nodes]
    mode: np.ndarray  # int64 [nodes]: 0-5 the BRANCH_* modes, MEMBER, LEAF
    true_child: np.ndarray  # int64 [nodes]; a leaf points at itself
    false_child: np.ndarray  # int64 [nodes]
    missing_true: np.ndarray  # bool [nodes]: a NaN takes the true branch
    roots: np.ndarray  # int64 [trees]
    members: dict[int, np.ndarray]  # node -> the set a BRANCH_MEMBER node tests


@dataclass(frozen=True, eq=False)
class Forest:
    """A tree ensemble: its nodes, and how summed leaf values become the output's columns.

    A row's columns before ``post_transform`` are ``(sum of its leaves' leaf_values) @ coef +
    offset``; thresholds are already rounded to the precision the trees see.
    """

    nodes: Nodes
    leaf_values: np.ndarray  # float64 [nodes, scores]; AVERAGE's 1/trees already applied
    coef: np.ndarray  # float64 [scores, k]
    offset: np.ndarray  # float64 [k]
    post_transform: str  # what onnxruntime applies to those columns
    roundings: tuple[np.dtype[Any], ...]  # the precisions the input passes through
    n_features: int
    output_name: str
    op_type: str


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _floats(attrs: dict[str, Any], name: str) -> np.ndarray | None:
    """A float list attribute, preferring its ``*_as_tensor`` (double) twin."""
    tensor = attrs.get(f"{name}_as_tensor")
    if tensor is not None:
        return np.asarray(numpy_helper.to_array(tensor), dtype=np.float64).reshape(-1)
    value = attrs.get(name)
    return None if value is None else np.asarray(value, dtype=np.float64).reshape(-1)


def _text(value: Any, default: str) -> str:
    value = default if value is None else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _ints(attrs: dict[str, Any], name: str, n: int | None = None) -> np.ndarray:
    value = attrs.get(name)
    return np.asarray(np.zeros(n or 0) if value is None else value, dtype=np.int64).reshape(-1)


def _nodes_v3(attrs: dict[str, Any]) -> Nodes | None:
    """``nodes_*`` of TreeEnsembleRegressor/Classifier, keyed by (tree id, node id)."""
    tree_ids, node_ids = _ints(attrs, "nodes_treeids"), _ints(attrs, "nodes_nodeids")
    n = tree_ids.shape[0]
    thresholds = _floats(attrs, "nodes_values")
    names = [_text(m, "") for m in attrs.get("nodes_modes", [])]
    features = _ints(attrs, "nodes_featureids")
    trues, falses = _ints(attrs, "nodes_truenodeids"), _ints(attrs, "nodes_falsenodeids")
    missing = _ints(attrs, "nodes_missing_value_tracks_true", n)
    columns = (node_ids, features, trues, falses, missing)
    if n == 0 or thresholds is None or any(a.shape[0] != n for a in (thresholds, *columns)):
        return None
    if len(names) != n or any(m not in (*_MODE_NAMES, "LEAF") for m in names):
        return None
    index = {(int(t), int(i)): k for k, (t, i) in enumerate(zip(tree_ids, node_ids, strict=True))}
    if len(index) != n:
        return None
    mode = np.array([LEAF if m == "LEAF" else _MODE_NAMES.index(m) for m in names])
    true_child, false_child = np.arange(n), np.arange(n)
    has_parent = np.zeros(n, dtype=bool)
    for k in np.flatnonzero(mode != LEAF):
        tree = int(tree_ids[k])
        t, f = index.get((tree, int(trues[k]))), index.get((tree, int(falses[k])))
        if t is None or f is None:
            return None
        true_child[k], false_child[k] = t, f
        has_parent[[t, f]] = True
    roots = np.flatnonzero(~has_parent)
    if sorted(tree_ids[roots].tolist()) != sorted(set(tree_ids.tolist())):
        return None  # a tree without exactly one root
    return Nodes(
        np.where(mode == LEAF, 0, features), thresholds, mode, true_child, false_child,
        missing.astype(bool), roots, {},
    )  # fmt: skip


def _always_scored(nodes: Nodes, tree_of: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per score: does some tree give every one of its leaves an entry for it?"""
    leaves = nodes.mode == LEAF
    result = np.zeros(present.shape[1], dtype=bool)
    for tree in np.unique(tree_of):
        in_tree = leaves & (tree_of == tree)
        result |= present[in_tree].all(axis=0)
    return result


def _layout(
    op: str,
    attrs: dict[str, Any],
    nodes: Nodes,
    tree_of: np.ndarray,
    leaf_values: np.ndarray,
    present: np.ndarray,
) -> _Layout | None:
    """(leaf values, coef, offset, post_transform) for a v1-3 node, or None."""
    transform = _text(attrs.get("post_transform"), "NONE")
    base = _floats(attrs, "base_values")
    base = np.zeros(0) if base is None else base
    n_scores = leaf_values.shape[1]
    if transform not in _TRANSFORMS:
        return None
    if op == "TreeEnsembleRegressor":
        aggregate = _text(attrs.get("aggregate_function"), "SUM")
        if aggregate not in ("SUM", "AVERAGE") or base.shape[0] not in (0, n_scores):
            return None
        if aggregate == "AVERAGE":
            leaf_values = leaf_values / nodes.roots.shape[0]
        offset = np.resize(base, n_scores)  # zeros when there is no base
        if n_scores > 1 and np.any((offset != 0) & ~_always_scored(nodes, tree_of, present)):
            return None  # onnxruntime adds such a base value only to rows a leaf scored
        if n_scores == 1 and not np.all(present[nodes.mode == LEAF, 0]):
            return None  # onnxruntime reads a one-target leaf's first entry, which must exist
        if n_scores == 1 and transform != "PROBIT":
            transform = "NONE"  # onnxruntime applies no other transform to one target
        return leaf_values, np.eye(n_scores), offset, transform
    if n_scores > 2:
        if base.shape[0] not in (0, n_scores):
            return None
        return leaf_values, np.eye(n_scores), np.resize(base, n_scores), transform
    if np.any(present[:, 1]):  # both columns are scored: plain, if class 1 is scored on every row
        if base.shape[0] or not _always_scored(nodes, tree_of, present)[1]:
            return None
        return leaf_values, np.eye(2), np.zeros(2), transform
    if base.shape[0] > 1 or transform == "PROBIT":
        return None
    b = float(base[0]) if base.shape[0] else 0.0
    coef = np.array([[-1.0, 1.0]])
    if transform == "LOGISTIC":
        return leaf_values[:, :1], coef, np.array([-b, b]), "LOGISTIC"
    positive = bool(np.all(leaf_values[present] >= 0))
    return leaf_values[:, :1], coef, np.array([1.0 - b if positive else -b, b]), "NONE"


def _read_v3(op: str, attrs: dict[str, Any]) -> tuple[Nodes, _Layout] | None:
    """TreeEnsembleRegressor/Classifier (ai.onnx.ml 1-3)."""
    nodes = _nodes_v3(attrs)
    if nodes is None:
        return None
    tree_of, node_ids = _ints(attrs, "nodes_treeids"), _ints(attrs, "nodes_nodeids")
    key = {(int(t), int(i)): k for k, (t, i) in enumerate(zip(tree_of, node_ids, strict=True))}
    regressor = op == "TreeEnsembleRegressor"
    prefix = "target" if regressor else "class"
    labels = attrs.get("classlabels_int64s") or attrs.get("classlabels_strings") or []
    n_scores = int(attrs.get("n_targets", 1)) if regressor else len(labels)
    weights = _floats(attrs, f"{prefix}_weights")
    entries = [_ints(attrs, f"{prefix}_{k}") for k in ("treeids", "nodeids", "ids")]
    if n_scores < (1 if regressor else 2) or weights is None:
        return None
    if any(e.shape != weights.shape for e in entries):
        return None
    values = np.zeros((tree_of.shape[0], n_scores))
    present = np.zeros(values.shape, dtype=bool)
    for t, i, j, w in zip(*entries, weights, strict=True):
        k = key.get((int(t), int(i)))
        if k is None or nodes.mode[k] != LEAF or not 0 <= j < n_scores or present[k, j]:
            return None  # not a leaf, score out of range, or a duplicate entry
        values[k, j], present[k, j] = w, True
    layout = _layout(op, attrs, nodes, tree_of, values, present)
    return None if layout is None else (nodes, layout)


def _member_sets(attrs: dict[str, Any], mode: np.ndarray) -> dict[int, np.ndarray] | None:
    """The NaN-delimited sets of the BRANCH_MEMBER nodes, in node order."""
    member_nodes = np.flatnonzero(mode == MEMBER)
    if member_nodes.size == 0:
        return {}
    raw = attrs.get("membership_values")
    values = np.zeros(0) if raw is None else numpy_helper.to_array(raw).astype(np.float64)
    sets: list[list[float]] = [[]]
    for v in values.reshape(-1).tolist():
        if v != v:  # NaN ends a set
            sets.append([])
        else:
            sets[-1].append(v)
    if not sets[-1] and len(sets) > member_nodes.size:
        sets.pop()  # a trailing NaN
    if len(sets) != member_nodes.size:
        return None
    return {int(k): np.array(sets[i]) for i, k in enumerate(member_nodes)}


def _read_v5(attrs: dict[str, Any]) -> tuple[Nodes, _Layout] | None:
    """TreeEnsemble (ai.onnx.ml 5): interior nodes first, then one node per leaf entry."""
    features = _ints(attrs, "nodes_featureids")
    n = features.shape[0]
    splits, modes = attrs.get("nodes_splits"), attrs.get("nodes_modes")
    leaf_weights, roots = attrs.get("leaf_weights"), _ints(attrs, "tree_roots")
    if splits is None or modes is None or leaf_weights is None or n == 0:
        return None
    thresholds = np.asarray(numpy_helper.to_array(splits), dtype=np.float64).reshape(-1)
    mode = np.asarray(numpy_helper.to_array(modes), dtype=np.int64).reshape(-1)
    weights = np.asarray(numpy_helper.to_array(leaf_weights), dtype=np.float64).reshape(-1)
    targets, n_leaves = _ints(attrs, "leaf_targetids"), weights.shape[0]
    cols = [_ints(attrs, f"nodes_{k}") for k in ("truenodeids", "falsenodeids")]
    flags = [_ints(attrs, f"nodes_{k}", n) for k in ("trueleafs", "falseleafs")]
    missing = _ints(attrs, "nodes_missing_value_tracks_true", n)
    n_scores = int(attrs.get("n_targets", 1))
    if any(a.shape[0] != n for a in (thresholds, mode, missing, *cols, *flags)) or (
        targets.shape[0] != n_leaves or np.any((mode < 0) | (mode > MEMBER))
    ):
        return None
    if np.any((targets < 0) | (targets >= n_scores)) or np.any((roots < 0) | (roots >= n)):
        return None
    children = []
    for col, flag in zip(cols, flags, strict=True):
        limit = np.where(flag != 0, n_leaves, n)
        if np.any((col < 0) | (col >= limit)):
            return None
        children.append(
            np.concatenate([np.where(flag != 0, col + n, col), np.arange(n_leaves) + n])
        )
    members = _member_sets(attrs, mode)
    if members is None:
        return None
    total = n + n_leaves
    leaf_values = np.zeros((total, n_scores))
    np.add.at(leaf_values, (np.arange(n_leaves) + n, targets), weights)
    aggregate = int(attrs.get("aggregate_function", 1))  # 0 AVERAGE, 1 SUM
    transform_id = int(attrs.get("post_transform", 0))
    if aggregate not in (0, 1) or not 0 <= transform_id < len(_TRANSFORMS_V5):
        return None
    nodes = Nodes(
        np.concatenate([features, np.zeros(n_leaves, dtype=np.int64)]),
        np.concatenate([thresholds, np.zeros(n_leaves)]),
        np.concatenate([mode, np.full(n_leaves, LEAF)]),
        children[0], children[1],
        np.concatenate([missing != 0, np.zeros(n_leaves, dtype=bool)]),
        roots, members,
    )  # fmt: skip
    if aggregate == 0:
        leaf_values = leaf_values / roots.shape[0]
    transform = _TRANSFORMS_V5[transform_id]
    if n_scores == 1 and transform != "PROBIT":
        transform = "NONE"  # as for TreeEnsembleRegressor
    elif transform in ("SOFTMAX", "LOGISTIC"):
        return None  # onnxruntime 1.32 swaps these two codes; the spec and it disagree
    return nodes, (leaf_values, np.eye(n_scores), np.zeros(n_scores), transform)


def _standard(node: onnx.NodeProto, op: str) -> bool:
    return node.op_type == op and node.domain in ("", "ai.onnx")


def _float_cast(node: onnx.NodeProto) -> np.dtype[Any] | None:
    """The precision a Cast to float or double rounds to (None for any other node)."""
    return _FLOATS.get(int(_attrs(node).get("to", 0))) if _standard(node, "Cast") else None


def _passes_values(node: onnx.NodeProto) -> bool:
    """Does this node hand its input's values on unchanged (up to float rounding)?"""
    zipmap = node.op_type == "ZipMap" and node.domain == _ML
    return zipmap or _standard(node, "Identity") or _float_cast(node) is not None


def _wiring(graph: onnx.GraphProto) -> tuple[onnx.NodeProto, list[np.dtype[Any]], str, int] | None:
    """The tree node, the roundings on the way to it, the explained output, and M (0: unknown)."""
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    trees = [n for n in graph.node if n.domain == _ML and n.op_type in _TREE_OPS]
    if len(inputs) != 1 or len(trees) != 1 or not inputs[0].type.HasField("tensor_type"):
        return None
    tensor, tree = inputs[0].type.tensor_type, trees[0]
    dtype, dims = _FLOATS.get(tensor.elem_type), list(tensor.shape.dim)
    if dtype is None or (tensor.HasField("shape") and len(dims) != 2) or not tree.input:
        return None
    n_features = dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else 0
    plumbing = ("Identity", "Cast", "ZipMap")  # Cast: any type, e.g. the label's
    if any(n is not tree and n.op_type not in plumbing for n in graph.node):
        return None
    producer = {out: n for n in graph.node for out in n.output}
    roundings, name = [dtype], tree.input[0]
    for _ in graph.node:
        before = producer.get(name)
        if name == inputs[0].name or before is None or not _passes_values(before):
            break
        if (cast := _float_cast(before)) is not None:
            roundings.insert(1, cast)
        name = before.input[0]
    if name != inputs[0].name:
        return None
    is_classifier = tree.op_type == "TreeEnsembleClassifier"
    if len(tree.output) < 1 + is_classifier:
        return None
    reached, frontier = {tree.output[int(is_classifier)]}, [tree.output[int(is_classifier)]]
    while frontier:
        current = frontier.pop()
        for n in graph.node:
            fed = n.input and n.input[0] == current and n is not tree
            if fed and _passes_values(n) and n.output[0] not in reached:
                reached.add(n.output[0])
                frontier.append(n.output[0])
    outputs = [o.name for o in graph.output if o.name in reached]
    return (tree, roundings, outputs[0], n_features) if outputs else None


def read_forest(model: onnx.ModelProto) -> Forest | None:
    """The tree ensemble a graph computes, or None when it is not (only) one."""
    wiring = _wiring(model.graph)
    if wiring is None:
        return None
    tree, roundings, output_name, n_features = wiring
    versions = {o.domain: o.version for o in model.opset_import}
    attrs = _attrs(tree)
    if tree.op_type == "TreeEnsemble":
        read = _read_v5(attrs) if versions.get(_ML, 0) >= 5 else None
    else:
        read = _read_v3(tree.op_type, attrs)
    if read is None:
        return None
    nodes, (leaf_values, coef, offset, transform) = read
    if np.any(np.isnan(nodes.threshold[nodes.mode < MEMBER])):
        return None
    used = nodes.feature[nodes.mode != LEAF]
    if used.size and (used.min() < 0 or (n_features and used.max() >= n_features)):
        return None
    precision = roundings[-1]  # onnxruntime compares in the type of the tree's input
    nodes = replace(
        nodes,
        threshold=nodes.threshold.astype(precision).astype(np.float64),
        members={k: v.astype(precision).astype(np.float64) for k, v in nodes.members.items()},
    )
    return Forest(
        nodes=nodes,
        leaf_values=leaf_values,
        coef=coef,
        offset=offset,
        post_transform=transform,
        roundings=tuple(roundings),
        n_features=n_features or (int(used.max()) + 1 if used.size else 1),
        output_name=output_name,
        op_type=tree.op_type,
    )

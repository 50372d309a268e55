"""Small real ONNX models built in-process for tests (no downloads)."""

from __future__ import annotations

from functools import cache

import numpy as np
import onnx
from onnx import TensorProto, helper

# OIP datatype -> ONNX element type, for identity models covering every datatype.
ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def identity_model(datatypes: list[str] | None = None) -> bytes:
    """One Identity node per datatype: input ``in_<DT>`` [N, 3] -> output ``out_<DT>``."""
    datatypes = datatypes or list(ONNX_TYPES)
    nodes, inputs, outputs = [], [], []
    for dt in datatypes:
        nodes.append(helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{dt}", ONNX_TYPES[dt], [None, 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{dt}", ONNX_TYPES[dt], [None, 3]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def scale_model(factor: float = 2.0) -> bytes:
    """``y = x * factor`` on FP32 [N, 4]: a tiny model whose output is easy to predict."""
    const = helper.make_tensor("factor", TensorProto.FLOAT, [1], [factor])
    node = helper.make_node("Mul", ["x", "factor"], ["y"])
    graph = helper.make_graph(
        [node],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        initializer=[const],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@cache
def tabular_classifier() -> bytes:
    """A small RandomForest on scikit-learn's breast-cancer data, exported with ZipMap."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    data = load_breast_cancer()
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)
    forest.fit(data.data.astype(np.float32), data.target)
    model = to_onnx(
        forest,
        initial_types=[("float_input", FloatTensorType([None, 30]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(model.SerializeToString())


def breast_cancer_rows(count: int = 4) -> np.ndarray:
    """The first ``count`` rows of the breast-cancer features as FP32."""
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer().data[:count].astype(np.float32)


def slow_model(width: int = 1024, layers: int = 8) -> bytes:
    """``y = x @ W @ W ...`` (``layers`` MatMuls of ``width``²) on FP32 [N, 4]: each row
    costs about ``2 * layers * width²`` flops, so tests can keep a replica busy; ``y``
    holds the row sums, so answers stay checkable."""
    rng = np.random.default_rng(0)
    widen = helper.make_tensor("widen", TensorProto.FLOAT, [4, width], np.ones((4, width)).ravel())
    square = rng.standard_normal((width, width)).astype(np.float32) / width
    nodes = [helper.make_node("MatMul", ["x", "widen"], ["h0"])]
    initializers = [
        widen,
        helper.make_tensor("w", TensorProto.FLOAT, [width, width], square.ravel()),
    ]
    for layer in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{layer}", "w"], [f"h{layer + 1}"]))
    nodes.append(helper.make_node("Mul", [f"h{layers}", "zero"], ["z"]))
    nodes.append(helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1))
    nodes.append(helper.make_node("ReduceSum", ["z", "axes"], ["zs"], keepdims=1))
    nodes.append(helper.make_node("Add", ["s", "zs"], ["y"]))
    initializers += [
        helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()

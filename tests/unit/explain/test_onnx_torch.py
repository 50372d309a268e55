"""The ONNX-on-torch interpreter: it computes what onnxruntime computes, and has gradients."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from openmaas.explain.onnx_torch import UnsupportedGraphError, to_torch

torch = pytest.importorskip("torch")
nn = torch.nn


def export_onnx(model: Any, example: Any, outputs: tuple[str, ...] = ("y",)) -> bytes:
    """``model`` (one input ``x``) as ONNX opset 17 by the TorchScript exporter, batch dynamic."""
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in ("x", *outputs)}
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other")
        torch.onnx.export(
            model.eval(),
            (example,),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=list(outputs),
            dynamic_axes=axes,
        )
    return buffer.getvalue()


def digits_network(batch_norm: bool = False, avg_pool: bool = False) -> Any:
    """Conv-ReLU-Conv-ReLU-Pool-Flatten-Linear-ReLU-Linear on ``[n, 1, 8, 8]``: 10 logits.

    A batch normalisation goes after the first ReLU (right after a convolution, the exporter
    would fold it into the convolution's weights).
    """
    norm = [nn.BatchNorm2d(8)] if batch_norm else []
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        *norm,
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2) if avg_pool else nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


class Classified(nn.Module):  # type: ignore[misc]
    """A network's class (ArgMax) and probabilities (softmax): two outputs."""

    def __init__(self, network: Any) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Any) -> tuple[Any, Any]:
        logits = self.network(x)
        return logits.argmax(dim=1), logits.softmax(dim=1)


def _onnxruntime(model: bytes, output: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run([output], {"x": x.astype(np.float32)})[0]
    return result


def _random_batch_norm_statistics(network: Any) -> None:
    """Give batch normalisations running statistics that are not the identity."""
    generator = torch.Generator().manual_seed(1)
    network.train()
    with torch.no_grad():
        for _ in range(5):
            network(torch.rand(16, 1, 8, 8, generator=generator) * 3)


def test_an_mlp_computes_what_onnxruntime_computes() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    model = export_onnx(mlp, torch.zeros(1, 6))
    x = np.random.default_rng(0).normal(size=(7, 6))
    graph = to_torch(model, "y")
    ours = graph.predict(x)
    assert ours.shape == (7, 3)
    assert ours.dtype == np.float64
    assert np.abs(ours - _onnxruntime(model, "y", x)).max() < 1e-5


@pytest.mark.parametrize(
    ("batch_norm", "avg_pool"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_a_cnn_computes_what_onnxruntime_computes(batch_norm: bool, avg_pool: bool) -> None:
    torch.manual_seed(0)
    network = digits_network(batch_norm, avg_pool)
    if batch_norm:
        _random_batch_norm_statistics(network)
    model = export_onnx(Classified(network), torch.zeros(1, 1, 8, 8), ("label", "probs"))
    x = np.random.default_rng(1).uniform(0, 1, (9, 1, 8, 8))
    graph = to_torch(model, "probs")
    ours = graph.predict(x)
    assert ours.shape == (9, 10)
    assert np.abs(ours - _onnxruntime(model, "probs", x)).max() < 1e-5
    assert ("BatchNormalization" in graph.ops) == batch_norm
    assert ("AveragePool" in graph.ops) == avg_pool
    assert "ArgMax" not in graph.ops  # only what "probs" needs runs


def test_gradients_equal_torch_autograd_on_the_original_network() -> None:
    torch.manual_seed(0)
    network = digits_network(batch_norm=True)
    _random_batch_norm_statistics(network)
    model = export_onnx(Classified(network), torch.zeros(1, 1, 8, 8), ("label", "probs"))
    graph = to_torch(model, "probs")
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ours = x.clone().requires_grad_(True)
    graph(ours)[:, 3].sum().backward()
    theirs = x.clone().requires_grad_(True)
    network.double().eval()
    network(theirs).softmax(dim=1)[:, 3].sum().backward()
    assert ours.grad is not None
    assert theirs.grad is not None
    assert torch.abs(ours.grad).max() > 0
    assert torch.allclose(ours.grad, theirs.grad, rtol=1e-9, atol=1e-12)


def test_a_scikit_learn_mlp_computes_what_onnxruntime_computes() -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    features, labels = load_iris(return_X_y=True)
    features = features.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=0)
        mlp.fit(features, labels)
    opsets = {"": 17, "ai.onnx.ml": 3}
    plain = to_onnx(mlp, features[:1], target_opset=opsets, options={"zipmap": False})
    session = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(["probabilities"], {plain.graph.input[0].name: features[:9]})[0]
    graph = to_torch(plain, "probabilities")  # the labels' ArrayFeatureExtractor is not run
    assert np.abs(graph.predict(features[:9]) - theirs).max() < 1e-5
    mapped = to_onnx(mlp, features[:1], target_opset=opsets)  # probabilities via ZipMap
    with pytest.raises(UnsupportedGraphError, match="ZipMap") as caught:
        to_torch(mapped, "output_probability")
    assert caught.value.ops == ("ai.onnx.ml.ZipMap",)


def test_an_integer_output_has_no_gradient() -> None:
    model = export_onnx(Classified(digits_network()), torch.zeros(1, 1, 8, 8), ("label", "probs"))
    with pytest.raises(UnsupportedGraphError, match="label"):
        to_torch(model, "label")
    with pytest.raises(ValueError, match="no value 'nothing'"):
        to_torch(model, "nothing")


def test_an_lstm_is_unsupported_and_named() -> None:
    class LastStep(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(1, 4, batch_first=True)

        def forward(self, x: Any) -> Any:
            return self.lstm(x)[0][:, -1]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Converting a tensor to a Python boolean")
        model = export_onnx(LastStep(), torch.zeros(1, 5, 1))
    with pytest.raises(UnsupportedGraphError, match="LSTM") as caught:
        to_torch(model, "y")
    assert "LSTM" in caught.value.ops


def _model(
    nodes: list[onnx.NodeProto],
    shape: list[int],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    outputs: tuple[str, ...] = ("y",),
) -> bytes:
    """A one-input (``x``, float) graph of ``nodes``."""
    graph = helper.make_graph(
        nodes,
        "case",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(value, name) for name, value in (initializers or {}).items()],
    )
    ir_version = 8 if opset >= 13 else 6
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version
    )
    return model.SerializeToString()


def test_an_unsupported_op_is_named_only_when_the_output_needs_it() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=1),
    ]
    model = _model(nodes, [2, 5], {"k": np.array([2], np.int64)}, outputs=("y", "values"))
    assert to_torch(model, "y").ops == ("Relu",)
    with pytest.raises(UnsupportedGraphError, match="TopK") as caught:
        to_torch(model, "values")
    assert caught.value.ops == ("TopK",)


def test_an_output_of_two_inputs_is_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "z"], ["y"])],
        "two",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 2]) for name in "xz"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(UnsupportedGraphError, match="inputs"):
        to_torch(model, "y")


F32, I64 = np.float32, np.int64
R = np.random.default_rng(5)
N = helper.make_node


def _case(
    name: str,
    nodes: list[onnx.NodeProto],
    shape: list[int],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    low: float = -1.0,
) -> Any:
    """A graph of ``nodes`` from ``x`` (``shape``, uniform in ``[low, 3]``) to ``y``."""
    return pytest.param(nodes, shape, initializers or {}, opset, low, id=name)


def _weights(*shape: int) -> np.ndarray:
    return R.normal(size=shape).astype(F32)


def _ints(*values: int) -> np.ndarray:
    return np.array(values, I64)


CASES = [
    _case(
        "conv-uneven-pads-strides-dilations-groups",
        [
            N(
                "Conv",
                ["x", "w", "b"],
                ["y"],
                group=2,
                strides=[2, 1],
                dilations=[1, 2],
                pads=[1, 0, 2, 1],
            )
        ],
        [2, 4, 7, 6],
        {"w": _weights(6, 2, 3, 2), "b": _weights(6)},
    ),
    _case(
        "conv-same-upper",
        [N("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
        [2, 2, 5, 6],
        {"w": _weights(3, 2, 3, 3)},
    ),
    _case(
        "conv-1d", [N("Conv", ["x", "w"], ["y"], pads=[1, 1])], [2, 3, 9], {"w": _weights(4, 3, 3)}
    ),
    _case(
        "maxpool-pads-ceil",
        [
            N(
                "MaxPool",
                ["x"],
                ["y"],
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
                ceil_mode=1,
            )
        ],
        [2, 3, 8, 7],
    ),
    _case(
        "maxpool-uneven-pads",
        [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 1, 1, 0])],
        [2, 2, 5, 5],
    ),
    _case(
        "maxpool-dilated",
        [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2])],
        [2, 2, 6, 6],
    ),
    _case(
        "avgpool-pads-exclude",
        [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        [2, 2, 7, 6],
    ),
    _case(
        "avgpool-pads-include",
        [
            N(
                "AveragePool",
                ["x"],
                ["y"],
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
                count_include_pad=1,
            )
        ],
        [2, 2, 7, 6],
    ),
    _case(
        "avgpool-uneven-pads",
        [N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])],
        [2, 2, 5, 5],
    ),
    _case("global-avgpool", [N("GlobalAveragePool", ["x"], ["y"])], [2, 3, 4, 5]),
    _case(
        "batchnorm",
        [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)],
        [2, 3, 4, 4],
        {
            "s": _weights(3),
            "b": _weights(3),
            "m": _weights(3),
            "v": R.uniform(0.5, 2, 3).astype(F32),
        },
    ),
    _case(
        "layernorm",
        [N("LayerNormalization", ["x", "s", "b"], ["y"], axis=1)],
        [3, 4, 5],
        {"s": _weights(4, 5), "b": _weights(4, 5)},
    ),
    _case(
        "gemm-transB-alpha-beta",
        [N("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)],
        [3, 4],
        {"w": _weights(5, 4), "c": _weights(5)},
    ),
    _case(
        "gemm-transA",
        [N("Gemm", ["x", "w", "c"], ["y"], transA=1)],
        [4, 4],
        {"w": _weights(4, 5), "c": _weights(1)},
    ),
    _case("matmul-3d", [N("MatMul", ["x", "w"], ["y"])], [2, 3, 4], {"w": _weights(4, 5)}),
    _case(
        "reshape-zero-and-minus-one",
        [N("Reshape", ["x", "s"], ["y"])],
        [2, 3, 4],
        {"s": _ints(0, 2, -1)},
    ),
    _case(
        "dynamic-flatten-by-shape-gather-concat",
        [
            N("Shape", ["x"], ["shape"]),
            N("Gather", ["shape", "zero"], ["batch"], axis=0),
            N("Unsqueeze", ["batch", "axes"], ["batch1"]),
            N("Concat", ["batch1", "minus_one"], ["target"], axis=0),
            N("Reshape", ["x", "target"], ["y"]),
        ],
        [3, 2, 4],
        {"zero": np.array(0, I64), "axes": _ints(0), "minus_one": _ints(-1)},
    ),
    _case(
        "slice-negative-steps",
        [N("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
        [2, 6, 5],
        {"st": _ints(1, -1), "en": _ints(5, -6), "ax": _ints(1, 2), "sp": _ints(2, -2)},
    ),
    _case(
        "unsqueeze-squeeze",
        [N("Unsqueeze", ["x", "a"], ["u"]), N("Squeeze", ["u"], ["y"])],
        [3, 4, 1],
        {"a": _ints(1, -1)},
    ),
    _case(
        "squeeze-opset-11",
        [N("Unsqueeze", ["x"], ["u"], axes=[2]), N("Squeeze", ["u"], ["y"], axes=[-1, 2])],
        [3, 4, 1],
        opset=11,
    ),
    _case(
        "softmax-opset-11-coerces",
        [N("Softmax", ["x"], ["y"], axis=1)],
        [2, 3, 4],
        opset=11,
        low=-3.0,
    ),
    _case(
        "concat-transpose-softmax-logsoftmax",
        [
            N("Neg", ["x"], ["n"]),
            N("Concat", ["x", "n"], ["c"], axis=1),
            N("Transpose", ["c"], ["t"], perm=[0, 2, 1]),
            N("Softmax", ["t"], ["s"], axis=1),
            N("LogSoftmax", ["t"], ["l"]),
            N("Add", ["s", "l"], ["y"]),
        ],
        [2, 3, 4],
        low=-3.0,
    ),
    _case(
        "arithmetic",
        [
            N("Sqrt", ["x"], ["a"]),
            N("Log", ["x"], ["b"]),
            N("Pow", ["x", "three"], ["c"]),
            N("Div", ["a", "c"], ["d"]),
            N("Sub", ["d", "b"], ["e"]),
            N("Erf", ["e"], ["f"]),
            N("Exp", ["f"], ["g"]),
            N("Mul", ["g", "x"], ["y"]),
        ],
        [3, 5],
        {"three": np.array(3.0, F32)},
        low=0.5,
    ),
    _case(
        "activations",
        [
            N("LeakyRelu", ["x"], ["a"], alpha=0.2),
            N("Sigmoid", ["a"], ["b"]),
            N("Tanh", ["x"], ["c"]),
            N("Relu", ["x"], ["d"]),
            N("Elu", ["x"], ["e"]),
            N("Softplus", ["x"], ["f"]),
            N("HardSigmoid", ["x"], ["g"]),
            N("Abs", ["x"], ["h"]),
            N("Max", ["a", "c", "e"], ["i"]),
            N("Min", ["f", "g"], ["j"]),
            N("Sum", ["b", "d", "h", "i", "j"], ["y"]),
        ],
        [4, 6],
        low=-3.0,
    ),
    _case(
        "clip-reduce",
        [
            N("Clip", ["x", "lo", "hi"], ["a"]),
            N("Clip", ["x", "", "hi"], ["b"]),
            N("ReduceMean", ["a"], ["c"], axes=[2], keepdims=0),
            N("ReduceSum", ["b", "last"], ["d"], keepdims=1),
            N("Squeeze", ["d", "last"], ["e"]),
            N("Add", ["c", "e"], ["y"]),
        ],
        [3, 4, 5],
        {"lo": np.array(-0.5, F32), "hi": np.array(0.7, F32), "last": _ints(-1)},
    ),
    _case(
        "reducemean-opset-18",
        [N("ReduceMean", ["x", "axes"], ["y"], keepdims=0)],
        [3, 4, 5],
        {"axes": _ints(1, 2)},
        opset=18,
    ),
    _case(
        "cast-truncates-argmax",
        [
            N("Cast", ["x"], ["i"], to=TensorProto.INT64),
            N("Cast", ["i"], ["f"], to=TensorProto.FLOAT),
            N("ArgMax", ["x"], ["k"], axis=1, keepdims=0),
            N("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
            N("Unsqueeze", ["kf", "one"], ["ku"]),
            N("Add", ["f", "ku"], ["y"]),
        ],
        [4, 6],
        {"one": _ints(1)},
        low=-3.0,
    ),
    _case(
        "constants-dropout-identity-where-pad",
        [
            N("Constant", [], ["c"], value=numpy_helper.from_array(np.arange(4, dtype=F32))),
            N("Constant", [], ["half"], value_float=0.5),
            N("Mul", ["x", "c"], ["a"]),
            N("Dropout", ["a"], ["b"]),
            N("Identity", ["b"], ["d"]),
            N("Greater", ["d", "half"], ["m"]),
            N("Mul", ["d", "half"], ["e"]),
            N("Where", ["m", "d", "e"], ["w"]),
            N("Pad", ["w", "pads", "fill"], ["y"]),
        ],
        [3, 4],
        {"pads": _ints(0, 1, 0, 2), "fill": np.array(0.25, F32)},
    ),
]


@pytest.mark.parametrize(("nodes", "shape", "initializers", "opset", "low"), CASES)
def test_each_operator_computes_what_onnxruntime_computes(
    nodes: list[onnx.NodeProto],
    shape: list[int],
    initializers: dict[str, np.ndarray],
    opset: int,
    low: float,
) -> None:
    model = _model(nodes, shape, initializers, opset)
    x = np.random.default_rng(7).uniform(low, 3.0, shape).astype(F32).astype(np.float64)
    ours = to_torch(model, "y").predict(x)
    theirs = _onnxruntime(model, "y", x).astype(np.float64)
    assert ours.shape == (theirs.reshape(shape[0], -1) if theirs.ndim > 2 else theirs).shape
    assert np.abs(ours.reshape(theirs.shape) - theirs).max() <= 1e-5 * max(
        1.0, np.abs(theirs).max()
    )


def test_the_module_imports_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import openmaas.explain.onnx_torch, openmaas.explain.gradients\n"
        "import openmaas.explain.heatmap\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

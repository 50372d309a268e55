"""A BERT sentence encoder as an ONNX graph, built from its safetensors weights (no torch).

The graph is the encoder of Devlin et al. (absolute positions, post-layer-norm blocks, GELU
with erf), then mean pooling over the attention mask and L2 normalisation, as
sentence-transformers' ``all-MiniLM-L6-v2`` does. Inputs ``input_ids`` and
``attention_mask`` (INT64 ``[batch, tokens]``); output ``embedding`` (FP32
``[batch, hidden]``). ``bundle`` packs it with its tokenizer for ``text_encoder``.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["build_encoder", "bundle"]

_OPSET = 17


class _Graph:
    """Nodes and weights under construction, with unique names."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, transpose: bool = False) -> str:
        value = np.asarray(self.weights[name], dtype=np.float32)
        return self.const(name, np.ascontiguousarray(value.T if transpose else value))

    def op(self, kind: str, *inputs: str, **attributes: Any) -> str:
        self._count += 1
        output = f"{kind.lower()}_{self._count}"
        self.nodes.append(helper.make_node(kind, list(inputs), [output], **attributes))
        return output

    def dense(self, x: str, prefix: str) -> str:
        product = self.op("MatMul", x, self.weight(f"{prefix}.weight", transpose=True))
        return self.op("Add", product, self.weight(f"{prefix}.bias"))

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        gamma, beta = self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")
        return self.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=eps)


def build_encoder(weights: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> bytes:
    """The ONNX sentence encoder for BERT ``weights`` (names as in ``BertModel``).

    It takes at most ``config["max_position_embeddings"]`` tokens a text; bundle it with a
    ``max_length`` no larger.
    """
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    head = hidden // heads
    g = _Graph({k.removeprefix("bert."): v for k, v in weights.items()})

    ids, mask = "input_ids", "attention_mask"
    length = g.op("Gather", g.op("Shape", ids), g.const("one", np.array(1, np.int64)), axis=0)
    positions = g.op("Range", g.const("zero", np.array(0, np.int64)), length, "one")
    x = g.op("Gather", g.weight("embeddings.word_embeddings.weight"), ids, axis=0)
    x = g.op("Add", x, g.op("Gather", g.weight("embeddings.position_embeddings.weight"), positions))
    token_type = np.asarray(g.weights["embeddings.token_type_embeddings.weight"][0], np.float32)
    x = g.op("Add", x, g.const("token_type_0", token_type))
    x = g.layer_norm(x, "embeddings.LayerNorm", eps)

    keep = g.op("Cast", mask, to=TensorProto.FLOAT)
    blocked = g.op("Sub", g.const("one_f", np.array(1.0, np.float32)), keep)
    bias = g.op("Mul", blocked, g.const("minus_big", np.array(-10000.0, np.float32)))
    bias = g.op("Unsqueeze", bias, g.const("axes_1_2", np.array([1, 2], np.int64)))
    split = g.const("split_heads", np.array([0, 0, heads, head], np.int64))
    merge = g.const("merge_heads", np.array([0, 0, hidden], np.int64))
    scale = g.const("scale", np.array(1 / math.sqrt(head), np.float32))
    half = g.const("half", np.array(0.5, np.float32))
    root2 = g.const("root2", np.array(math.sqrt(2.0), np.float32))

    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}"
        q = g.op("Transpose", g.op("Reshape", g.dense(x, f"{p}.attention.self.query"), split),
                 perm=[0, 2, 1, 3])  # fmt: skip
        k = g.op("Transpose", g.op("Reshape", g.dense(x, f"{p}.attention.self.key"), split),
                 perm=[0, 2, 3, 1])  # fmt: skip
        v = g.op("Transpose", g.op("Reshape", g.dense(x, f"{p}.attention.self.value"), split),
                 perm=[0, 2, 1, 3])  # fmt: skip
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge)
        attended = g.dense(context, f"{p}.attention.output.dense")
        x = g.layer_norm(g.op("Add", x, attended), f"{p}.attention.output.LayerNorm", eps)
        inner = g.dense(x, f"{p}.intermediate.dense")
        gelu = g.op("Mul", g.op("Mul", inner, half),
                    g.op("Add", g.const(f"one_{layer}", np.array(1.0, np.float32)),
                         g.op("Erf", g.op("Div", inner, root2))))  # fmt: skip
        x = g.layer_norm(g.op("Add", x, g.dense(gelu, f"{p}.output.dense")),
                         f"{p}.output.LayerNorm", eps)  # fmt: skip

    weights3 = g.op("Unsqueeze", keep, g.const("axis_2", np.array([2], np.int64)))
    axis1 = g.const("axis_1", np.array([1], np.int64))
    summed = g.op("ReduceSum", g.op("Mul", x, weights3), axis1, keepdims=0)
    count = g.op("Max", g.op("ReduceSum", weights3, axis1, keepdims=0),
                 g.const("tiny", np.array(1e-9, np.float32)))  # fmt: skip
    mean = g.op("Div", summed, count)
    norm = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", mean, mean), axis1, keepdims=1))
    norm = g.op("Max", norm, g.const("eps_norm", np.array(1e-12, np.float32)))
    g.nodes.append(helper.make_node("Div", [mean, norm], ["embedding"]))

    graph = helper.make_graph(
        g.nodes,
        "sentence_encoder",
        [
            helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def bundle(
    encoder: bytes,
    tokenizer_json: str,
    *,
    max_length: int,
    task: str = "embeddings",
    labels: list[str] | None = None,
) -> bytes:
    """A publishable text model: the ONNX graph, its tokenizer and how to run them.

    ``max_length`` must not exceed the encoder's position embeddings. A classifier
    (``task="text-classification"``, a graph giving ``logits``) names its ``labels``.
    """
    manifest: dict[str, Any] = {"task": task, "max_length": max_length}
    if labels is not None:
        manifest["labels"] = labels
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("openmaas.json", json.dumps(manifest))
        archive.writestr("tokenizer.json", tokenizer_json)
        archive.writestr("model.onnx", encoder)
    return out.getvalue()

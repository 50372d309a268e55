"""ONNX models: validation and signature at publish time, onnxruntime at serving time.

Classifiers exported by skl2onnx end in a ``ZipMap`` node whose output is a list of dicts,
which no tensor protocol can carry; ``prepare`` removes it so that output becomes the
``FP32 [batch, classes]`` probability tensor, and records the class labels in the facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from openmaas.errors import InvalidArtifactError, InvalidInputError
from openmaas.runtimes.base import PreparedArtifact, Signature, TensorSpec

__all__ = ["OnnxRuntime", "prepare"]

_ONNX_TO_OIP: dict[int, str] = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.STRING: "BYTES",
}


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    if not value.type.HasField("tensor_type"):
        raise InvalidArtifactError(
            f"model output/input {value.name!r} is not a tensor (it is a "
            f"{value.type.WhichOneof('value')}); OpenMaaS serves tensor inputs and outputs only"
        )
    tensor = value.type.tensor_type
    datatype = _ONNX_TO_OIP.get(tensor.elem_type)
    if datatype is None:
        name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise InvalidArtifactError(
            f"tensor {value.name!r} has element type {name}, which OpenMaaS cannot serve; "
            f"use one of {sorted(set(_ONNX_TO_OIP.values()))}"
        )
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(value.name, datatype, shape)


def _drop_zipmap(model: onnx.ModelProto) -> dict[str, Any]:
    """Replace ZipMap outputs by their probability tensor; return the class labels found."""
    graph = model.graph
    facts: dict[str, Any] = {}
    for node in list(graph.node):
        if node.op_type != "ZipMap":
            continue
        labels: list[Any] = []
        for attr in node.attribute:
            if attr.name == "classlabels_int64s":
                labels = list(attr.ints)
            elif attr.name == "classlabels_strings":
                labels = [s.decode() for s in attr.strings]
        out_name, in_name = node.output[0], node.input[0]
        graph.node.remove(node)
        # The probability tensor takes the output's name everywhere it is produced or read.
        for other in graph.node:
            for names in (other.input, other.output):
                for i, name in enumerate(names):
                    if name == in_name:
                        names[i] = out_name
        for i, out in enumerate(graph.output):
            if out.name == out_name:
                graph.output.remove(out)
                graph.output.insert(
                    i,
                    onnx.helper.make_tensor_value_info(
                        out_name, onnx.TensorProto.FLOAT, [None, len(labels) or None]
                    ),
                )
        facts["class_labels"] = labels
    return facts


def prepare(data: bytes) -> PreparedArtifact:
    """Validate ONNX bytes by parsing, checking and loading them; return what to store."""
    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise InvalidArtifactError(
            f"the upload is not a valid ONNX model ({str(exc).splitlines()[0][:200]}); "
            "export it with torch.onnx.export, tf2onnx or skl2onnx and upload the .onnx file"
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise InvalidArtifactError("the ONNX model has an empty graph")
    facts = _drop_zipmap(model)
    if facts:
        data = model.SerializeToString()
    initializers = {init.name for init in model.graph.initializer}
    signature = Signature(
        inputs=tuple(_spec(v) for v in model.graph.input if v.name not in initializers),
        outputs=tuple(_spec(v) for v in model.graph.output),
    )
    try:
        OnnxRuntime(data).unload()
    except Exception as exc:  # onnxruntime raises several unrelated types on a bad graph
        raise InvalidArtifactError(
            f"onnxruntime cannot load this model: {str(exc).splitlines()[0][:300]}"
        ) from exc
    facts.update(
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        opsets={op.domain or "ai.onnx": op.version for op in model.opset_import},
        ir_version=model.ir_version,
        doc_string=model.doc_string[:2000],
    )
    return PreparedArtifact(format="onnx", data=data, signature=signature, facts=facts)


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    # The serving engine decides parallelism across requests; one op thread per request.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return options


class OnnxRuntime:
    """An onnxruntime session loaded from bytes (the plaintext never touches disk)."""

    def __init__(self, data: bytes) -> None:
        self._session: ort.InferenceSession | None = ort.InferenceSession(
            data, sess_options=_session_options(), providers=["CPUExecutionProvider"]
        )
        model_inputs = self._session.get_inputs()
        self._string_inputs = {i.name for i in model_inputs if i.type == "tensor(string)"}
        self._output_names = [o.name for o in self._session.get_outputs()]

    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        if self._session is None:
            raise RuntimeError("the model was unloaded")
        feed = {
            name: (_bytes_to_str(array) if name in self._string_inputs else array)
            for name, array in inputs.items()
        }
        names = list(outputs) or self._output_names
        results = self._session.run(names, feed)
        return {
            name: _str_to_bytes(np.asarray(value))
            for name, value in zip(names, results, strict=True)
        }

    def unload(self) -> None:
        self._session = None


def _bytes_to_str(array: np.ndarray) -> np.ndarray:
    """BYTES tensors hold bytes; onnxruntime's string tensors want str."""
    try:
        flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"this model's string inputs must be UTF-8 text: {exc}") from exc
    return np.array(flat, dtype=object).reshape(array.shape)


def _str_to_bytes(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in ("O", "U"):
        return array
    flat = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.reshape(-1)]
    return np.array(flat, dtype=object).reshape(array.shape)

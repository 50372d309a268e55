"""ONNX runtime: validation and signatures at publish time, ZipMap removal, and inference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from openmaas.errors import InvalidArtifactError, InvalidInputError
from openmaas.runtimes import (
    DATATYPES,
    PreparedArtifact,
    Signature,
    TensorSpec,
    load_runtime,
    numpy_dtype,
    prepare_artifact,
)
from openmaas.runtimes.datatypes import datatype_of
from openmaas.runtimes.onnx_runtime import OnnxRuntime, prepare
from tests.helpers.models import (
    ONNX_TYPES,
    breast_cancer_rows,
    identity_model,
    scale_model,
    tabular_classifier,
)


def _model(graph: onnx.GraphProto, opset: int = 17) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


# -- prepare ----------------------------------------------------------------------------


def test_identity_signature_has_every_datatype() -> None:
    prepared = prepare(identity_model())
    assert prepared.format == "onnx"
    assert prepared.signature.inputs == tuple(
        TensorSpec(f"in_{dt}", dt, (-1, 3)) for dt in ONNX_TYPES
    )
    assert prepared.signature.outputs == tuple(
        TensorSpec(f"out_{dt}", dt, (-1, 3)) for dt in ONNX_TYPES
    )
    assert {s.datatype for s in prepared.signature.inputs} == set(DATATYPES)


def test_prepare_keeps_a_plain_model_unchanged() -> None:
    data = scale_model()
    prepared = prepare(data)
    assert prepared.data == data
    assert "class_labels" not in prepared.facts
    assert prepared.facts["ir_version"] == 8
    assert prepared.facts["opsets"] == {"ai.onnx": 17}


def test_initializers_are_not_inputs() -> None:
    prepared = prepare(scale_model())
    assert [s.name for s in prepared.signature.inputs] == ["x"]


def test_symbolic_dimension_is_dynamic() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "sym",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 5])],
    )
    assert prepare(_model(graph)).signature.inputs[0].shape == (-1, 2, 5)


def test_classifier_zipmap_becomes_a_probability_tensor() -> None:
    original = tabular_classifier()
    assert "ZipMap" in {n.op_type for n in onnx.load_model_from_string(original).graph.node}
    prepared = prepare(original)
    assert prepared.data != original
    model = onnx.load_model_from_string(prepared.data)
    assert "ZipMap" not in {n.op_type for n in model.graph.node}
    onnx.checker.check_model(model)
    assert prepared.signature == Signature(
        inputs=(TensorSpec("float_input", "FP32", (-1, 30)),),
        outputs=(
            TensorSpec("output_label", "INT64", (-1,)),
            TensorSpec("output_probability", "FP32", (-1, 2)),
        ),
    )
    assert prepared.facts["class_labels"] == [0, 1]
    assert prepared.facts["producer"].startswith("skl2onnx")
    assert prepared.facts["opsets"]["ai.onnx.ml"] >= 1


def test_classifier_predictions_match_the_original_model() -> None:
    original = tabular_classifier()
    rows = breast_cancer_rows(32)
    session = ort.InferenceSession(original, providers=["CPUExecutionProvider"])
    want_labels, want_maps = session.run(
        ["output_label", "output_probability"], {"float_input": rows}
    )
    runtime = load_runtime("onnx", prepare(original).data)
    got = runtime.predict({"float_input": rows}, [])
    assert list(got) == ["output_label", "output_probability"]
    np.testing.assert_array_equal(got["output_label"], want_labels)
    assert got["output_probability"].dtype == np.float32
    assert got["output_probability"].shape == (32, 2)
    want_probabilities = np.array([[m[0], m[1]] for m in want_maps], dtype=np.float32)
    np.testing.assert_allclose(got["output_probability"], want_probabilities, rtol=1e-6)
    np.testing.assert_array_equal(got["output_probability"].argmax(axis=1), want_labels)
    assert len(set(want_labels.tolist())) == 2  # the rows cover both classes


def _zipmap_output(name: str) -> onnx.ValueInfoProto:
    return helper.make_value_info(
        name,
        helper.make_sequence_type_proto(
            helper.make_map_type_proto(
                TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
            )
        ),
    )


def _classifier_graph(nodes: list[onnx.NodeProto], outputs: list[onnx.ValueInfoProto]) -> bytes:
    graph = helper.make_graph(
        nodes, "clf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])], outputs
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def test_string_class_labels_are_recorded() -> None:
    data = _classifier_graph(
        [
            helper.make_node("Softmax", ["x"], ["probabilities"]),
            helper.make_node(
                "ZipMap",
                ["probabilities"],
                ["output_probability"],
                domain="ai.onnx.ml",
                classlabels_strings=["no", "maybe", "yes"],
            ),
        ],
        [
            helper.make_value_info(
                "output_probability",
                helper.make_sequence_type_proto(
                    helper.make_map_type_proto(
                        TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
                    )
                ),
            )
        ],
    )
    prepared = prepare(data)
    assert prepared.facts["class_labels"] == ["no", "maybe", "yes"]
    assert prepared.signature.outputs == (TensorSpec("output_probability", "FP32", (-1, 3)),)
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    got = OnnxRuntime(prepared.data).predict({"x": x}, [])["output_probability"]
    np.testing.assert_allclose(got.sum(axis=1), [1.0], rtol=1e-6)


def test_zipmap_input_used_by_another_node_still_loads() -> None:
    """skl2onnx's MLPClassifier feeds its probabilities to both ArgMax (label) and ZipMap."""
    data = _classifier_graph(
        [
            helper.make_node("Softmax", ["x"], ["probabilities"]),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
            helper.make_node(
                "ZipMap",
                ["probabilities"],
                ["output_probability"],
                domain="ai.onnx.ml",
                classlabels_int64s=[0, 1, 2],
            ),
        ],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            _zipmap_output("output_probability"),
        ],
    )
    original = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.array([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]], dtype=np.float32)
    want_label, _ = original.run(None, {"x": x})
    prepared = prepare(data)
    assert prepared.signature.outputs[1] == TensorSpec("output_probability", "FP32", (-1, 3))
    got = OnnxRuntime(prepared.data).predict({"x": x}, [])
    np.testing.assert_array_equal(got["label"], want_label)
    np.testing.assert_array_equal(got["output_probability"].argmax(axis=1), want_label)


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage bytes, not protobuf", b"\xff" * 64, b"\x00" * 16],
    ids=["empty", "text", "ff", "zeros"],
)
def test_garbage_is_an_invalid_artifact(data: bytes) -> None:
    with pytest.raises(InvalidArtifactError, match="not a valid ONNX model"):
        prepare(data)


def test_truncated_model_is_an_invalid_artifact() -> None:
    data = tabular_classifier()
    for cut in (len(data) // 2, len(data) - 1, 10):
        with pytest.raises(InvalidArtifactError):
            prepare(data[:cut])


def test_model_with_an_unknown_operator_is_an_invalid_artifact() -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")],
        "unknown",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    model.ir_version = 8
    with pytest.raises(InvalidArtifactError, match="onnxruntime"):
        prepare(model.SerializeToString())


def test_non_tensor_input_is_an_invalid_artifact() -> None:
    seq = helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, [2])
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["xs"], ["n"])],
        "seq",
        [seq],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    with pytest.raises(InvalidArtifactError, match="not a tensor"):
        prepare(_model(graph))


def test_unservable_element_type_is_an_invalid_artifact() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "bf16",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2])],
    )
    with pytest.raises(InvalidArtifactError, match="BFLOAT16"):
        prepare(_model(graph))


def test_prepare_artifact_sniffs_and_checks_the_format() -> None:
    assert prepare_artifact(scale_model()).format == "onnx"
    assert prepare_artifact(scale_model(), "onnx").format == "onnx"
    with pytest.raises(InvalidArtifactError) as caught:
        prepare_artifact(scale_model(), "pickle")
    assert caught.value.field == "format"


def test_load_runtime_rejects_an_unknown_format() -> None:
    with pytest.raises(InvalidArtifactError):
        load_runtime("pickle", scale_model())


def test_signature_round_trips_through_a_dict() -> None:
    signature = prepare(identity_model(["FP16", "BYTES"])).signature
    as_dict = signature.to_dict()
    assert as_dict["inputs"][0] == {"name": "in_FP16", "datatype": "FP16", "shape": [-1, 3]}
    assert Signature.from_dict(as_dict) == signature


def test_prepared_artifact_default_facts_are_independent() -> None:
    sig = Signature((), ())
    first = PreparedArtifact("onnx", b"", sig)
    first.facts["x"] = 1
    assert PreparedArtifact("onnx", b"", sig).facts == {}


# -- predict ----------------------------------------------------------------------------


def test_predict_scale_model() -> None:
    runtime = OnnxRuntime(scale_model(3.0))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = runtime.predict({"x": x}, ["y"])
    np.testing.assert_array_equal(got["y"], x * 3)


@pytest.mark.parametrize("datatype", [dt for dt in ONNX_TYPES if dt != "BYTES"])
def test_predict_identity_for_every_numeric_datatype(datatype: str) -> None:
    runtime = OnnxRuntime(identity_model([datatype]))
    values = np.array([[0, 1, 0], [1, 1, 0]]).astype(numpy_dtype(datatype))
    got = runtime.predict({f"in_{datatype}": values}, [])
    assert list(got) == [f"out_{datatype}"]
    assert got[f"out_{datatype}"].dtype == values.dtype
    np.testing.assert_array_equal(got[f"out_{datatype}"], values)
    assert datatype_of(got[f"out_{datatype}"]) == datatype


def test_predict_bytes_round_trip() -> None:
    runtime = OnnxRuntime(identity_model(["BYTES"]))
    values = np.empty((2, 3), dtype=object)
    values[:] = [[b"a", b"", "caf\u00e9".encode()], [b"x" * 100, "\u2603".encode(), b"\x00"]]
    out = runtime.predict({"in_BYTES": values}, [])["out_BYTES"]
    assert out.shape == (2, 3)
    assert out.dtype == object
    assert all(isinstance(v, bytes) for v in out.reshape(-1))
    assert out.tolist() == values.tolist()
    assert datatype_of(out) == "BYTES"


def test_non_utf8_bytes_input_is_invalid_input() -> None:
    runtime = OnnxRuntime(identity_model(["BYTES"]))
    values = np.empty((1, 3), dtype=object)
    values[:] = [[b"ok", b"\xff\xfe", b"ok"]]
    with pytest.raises(InvalidInputError, match="UTF-8"):
        runtime.predict({"in_BYTES": values}, [])


def test_predict_selected_outputs_only() -> None:
    runtime = OnnxRuntime(identity_model(["FP32", "INT64"]))
    got = runtime.predict(
        {
            "in_FP32": np.zeros((1, 3), dtype=np.float32),
            "in_INT64": np.ones((1, 3), dtype=np.int64),
        },
        ["out_INT64"],
    )
    assert list(got) == ["out_INT64"]
    np.testing.assert_array_equal(got["out_INT64"], np.ones((1, 3), dtype=np.int64))


def test_unloaded_runtime_refuses_to_predict() -> None:
    runtime = OnnxRuntime(scale_model())
    runtime.unload()
    with pytest.raises(RuntimeError, match="unloaded"):
        runtime.predict({"x": np.zeros((1, 4), dtype=np.float32)}, [])


def test_datatype_of_strings_is_bytes() -> None:
    assert datatype_of(np.array(["a"])) == "BYTES"
    assert datatype_of(np.array([b"a"])) == "BYTES"
    assert datatype_of(np.zeros(1, dtype=np.float16)) == "FP16"
    assert datatype_of(np.zeros(1, dtype=np.bool_)) == "BOOL"
    with pytest.raises(KeyError):
        numpy_dtype("FP8")

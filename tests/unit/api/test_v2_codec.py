"""OIP wire format: JSON tensors for every datatype, the binary extension, and responses."""

from __future__ import annotations

import functools
import json
import math
import struct
import time
from typing import Any

import numpy as np
import pytest

from openmaas.api import v2_codec
from openmaas.api.v2_codec import check_json_depth, encode_response
from openmaas.errors import (
    BadRequestError,
    DataLengthMismatchError,
    InvalidInputError,
    JSONTooDeepError,
    MalformedJSONError,
    TensorTooLargeError,
)
from openmaas.runtimes import DATATYPES
from openmaas.serving.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

# Six values per datatype, including each type's extremes.
VALUES: dict[str, list[Any]] = {
    "BOOL": [True, False, True, True, False, False],
    "UINT8": [0, 1, 2, 127, 128, 255],
    "UINT16": [0, 1, 2, 3, 256, 65535],
    "UINT32": [0, 1, 2, 3, 65536, 2**32 - 1],
    "UINT64": [0, 1, 2, 3, 2**32, 2**64 - 1],
    "INT8": [-128, -1, 0, 1, 2, 127],
    "INT16": [-(2**15), -1, 0, 1, 2, 2**15 - 1],
    "INT32": [-(2**31), -1, 0, 1, 2, 2**31 - 1],
    "INT64": [-(2**63), -1, 0, 1, 2, 2**63 - 1],
    "FP16": [0.0, -1.5, 0.5, 65504.0, -0.25, 2.0],
    "FP32": [0.0, -1.5, 0.1, 3.4e38, -1e-30, 2.0],
    "FP64": [0.0, -1.5, 0.1, 1.7e308, -1e-300, 2.0],
    "BYTES": ["", "a", "caf\u00e9", "\u2603", "two words", "x" * 50],
}
assert set(VALUES) == set(DATATYPES)

# The server's defaults; tests of the limits themselves pass their own.
decode_request = functools.partial(v2_codec.decode_request, max_elements=10_000_000, max_depth=32)
parse_json = functools.partial(v2_codec.parse_json, max_depth=32)


def _expected(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        array = np.empty(6, dtype=object)
        array[:] = [v.encode() for v in VALUES["BYTES"]]
        return array.reshape(2, 3)
    return np.array(VALUES[datatype], dtype=DATATYPES[datatype]).reshape(2, 3)


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def _decode_one(datatype: str, shape: list[int], data: Any, name: str = "x") -> np.ndarray:
    body = _json({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]})
    [tensor] = decode_request(body, None).inputs
    assert tensor.datatype == datatype
    assert tensor.shape == tuple(shape)
    return tensor.array


def _raw(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))
    return array.astype(DATATYPES[datatype].newbyteorder("<")).tobytes()


def _binary_body(
    inputs: list[tuple[str, str, list[int], bytes]], **document: Any
) -> tuple[bytes, bytes]:
    """The JSON header and the whole body of a binary request."""
    header = _json(
        {
            **document,
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(raw)},
                }
                for name, datatype, shape, raw in inputs
            ],
        }
    )
    return header, header + b"".join(raw for *_, raw in inputs)


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert got.dtype == object
        assert got.tolist() == want.tolist()
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# -- JSON requests ----------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(VALUES))
def test_json_flat_data_for_every_datatype(datatype: str) -> None:
    _assert_same(_decode_one(datatype, [2, 3], VALUES[datatype]), _expected(datatype))


@pytest.mark.parametrize("datatype", list(VALUES))
def test_json_nested_data_for_every_datatype(datatype: str) -> None:
    nested = [VALUES[datatype][:3], VALUES[datatype][3:]]
    _assert_same(_decode_one(datatype, [2, 3], nested), _expected(datatype))


def test_json_scalar_and_empty_tensors() -> None:
    _assert_same(_decode_one("FP32", [], [1.5]), np.array(1.5, dtype=np.float32))
    _assert_same(_decode_one("INT64", [0, 3], []), np.zeros((0, 3), dtype=np.int64))
    _assert_same(_decode_one("BYTES", [0], []), np.empty((0,), dtype=object))


def test_request_fields_are_decoded() -> None:
    body = _json(
        {
            "id": "abc",
            "parameters": {"binary_data_output": True},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
            "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
        }
    )
    request = decode_request(body, None)
    assert request.id == "abc"
    assert request.parameters == {"binary_data_output": True}
    assert request.outputs == [
        RequestedOutput("y", {"binary_data": False}),
        RequestedOutput("z", {}),
    ]


@pytest.mark.parametrize(
    ("shape", "data"),
    [([2, 3], [1, 2, 3, 4, 5]), ([2, 3], [1, 2, 3, 4, 5, 6, 7]), ([4], []), ([], [1, 2])],
)
def test_data_length_mismatch(shape: list[int], data: list[int]) -> None:
    with pytest.raises(DataLengthMismatchError) as caught:
        _decode_one("INT32", shape, data)
    assert caught.value.field == "inputs.x.data"
    assert str(math.prod(shape)) in caught.value.detail


def test_bytes_data_length_mismatch() -> None:
    with pytest.raises(DataLengthMismatchError):
        _decode_one("BYTES", [3], ["a", "b"])


def test_ragged_data_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError) as caught:
        _decode_one("FP32", [2, 2], [[1, 2], [3]])
    assert type(caught.value) is InvalidInputError
    assert caught.value.field == "inputs.x.data"


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        ("UINT8", 300),
        ("UINT8", -1),
        ("INT8", 128),
        ("INT32", 2**31),
        ("UINT64", 2**64),
        ("INT64", -(2**63) - 1),
    ],
)
def test_integer_overflow_is_invalid_input(datatype: str, value: int) -> None:
    with pytest.raises(InvalidInputError) as caught:
        _decode_one(datatype, [1], [value])
    assert caught.value.field == "inputs.x.data"
    assert datatype in caught.value.detail


@pytest.mark.parametrize(
    ("datatype", "data"),
    [("FP32", ["abc"]), ("INT32", [{"a": 1}]), ("INT64", [[1, 2], "x"]), ("FP64", [None, [1]])],
)
def test_non_numeric_data_is_invalid_input(datatype: str, data: list[Any]) -> None:
    with pytest.raises(InvalidInputError):
        _decode_one(datatype, [2], data)


@pytest.mark.parametrize(
    ("datatype", "data"),
    [("BOOL", ["False", "no"]), ("BOOL", ["x", ""]), ("INT32", [1.5, 2.0]), ("FP32", [None, 1])],
    ids=["bool-words", "bool-strings", "int-fraction", "fp-null"],
)
def test_values_of_the_wrong_json_type_are_rejected(datatype: str, data: list[Any]) -> None:
    """JSON strings are not booleans, 1.5 is not an integer and null is not a number."""
    with pytest.raises(InvalidInputError):
        _decode_one(datatype, [2], data)


def test_float_out_of_fp32_range_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        _decode_one("FP32", [1], [1e40])


@pytest.mark.parametrize("data", [[1, 2], ["a", 2], [["a"], [None]], [b"x".hex(), True]])
def test_non_string_bytes_data_is_invalid_input(data: list[Any]) -> None:
    with pytest.raises(InvalidInputError, match="must be strings") as caught:
        _decode_one("BYTES", [2], data)
    assert caught.value.field == "inputs.x"


@pytest.mark.parametrize("datatype", ["FP8", "fp32", "STRING", None, 3])
def test_unknown_datatype(datatype: Any) -> None:
    body = _json({"inputs": [{"name": "x", "datatype": datatype, "shape": [1], "data": [1]}]})
    with pytest.raises(InvalidInputError, match="not an OIP datatype") as caught:
        decode_request(body, None)
    assert caught.value.field == "inputs.x.datatype"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": {"name": "x"}}, "inputs"),
        ({"inputs": [3]}, "inputs[0]"),
        ({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}, "inputs[0].name"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}, None),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [True], "data": [1]}]}, None),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": "1", "data": [1]}]}, None),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, "inputs.x.data"),
    ],
)
def test_malformed_requests(document: Any, field: str | None) -> None:
    with pytest.raises(BadRequestError) as caught:
        decode_request(_json(document), None)
    if field is None:
        assert caught.value.field == "inputs.x.shape"
    else:
        assert caught.value.field == field


def test_request_id_must_be_a_string() -> None:
    body = _json(
        {"id": 7, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
    )
    with pytest.raises(BadRequestError) as caught:
        decode_request(body, None)
    assert caught.value.field == "id"


@pytest.mark.parametrize("body", [b"", b"{", b"[1,", b"\xff\xfe", b'{"a": 1} x', b"[" * 32])
def test_malformed_json(body: bytes) -> None:
    with pytest.raises(MalformedJSONError):
        parse_json(body)
    with pytest.raises(MalformedJSONError):
        decode_request(body, None)


# -- limits: JSON depth and tensor elements, both checked before allocating ---------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"[" * 33 + b"]" * 33,
        b'{"inputs": [' + b"[" * 31 + b"]" * 31 + b"]}",
        "[".join(["\u00e9"] * 40).encode(),
        ("[" * 40).encode("utf-16-le"),
        ("[" * 40).encode("utf-32"),
    ],
    ids=["open-arrays", "open-objects", "closed", "inside-oip", "utf8-text", "utf16", "utf32"],
)
def test_too_deep_json_is_refused_before_parsing(body: bytes) -> None:
    with pytest.raises(JSONTooDeepError, match="OPENMAAS_MAX_JSON_DEPTH") as caught:
        parse_json(body)
    assert caught.value.status == 400
    with pytest.raises(JSONTooDeepError):
        decode_request(body, None)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 32 + b"]" * 32,
        b'["' + b"[" * 100 + b'"]',
        b'["\\\\", "' + b"[" * 100 + b'"]',
        b'["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]',
        b"[[1, 2], [3, 4]]" * 1000,
        b"[]" * 100 + b"]" * 50 + b"[" * 10,
    ],
    ids=["at-limit", "in-string", "escaped-backslash", "escaped-quote", "wide", "unbalanced"],
)
def test_depth_counts_only_real_nesting(body: bytes) -> None:
    check_json_depth(body, 32)


def test_depth_check_is_linear() -> None:
    started = time.perf_counter()
    for body in (b'{"a":' * 1_000_000, b'["x", ' * 1_000_000, b"[1.5, " * 3_000_000):
        with pytest.raises((JSONTooDeepError, MalformedJSONError)):
            parse_json(body)
    assert time.perf_counter() - started < 5


def test_deeply_nested_string_tricks_do_not_hide_depth() -> None:
    """An escaped quote does not end a string; a string ending in a backslash does."""
    hidden = b'["\\\\", ' + b"[" * 40 + b"]" * 40 + b"]"
    assert json.loads(hidden)[0] == "\\"  # valid JSON, 41 levels deep
    with pytest.raises(JSONTooDeepError):
        check_json_depth(hidden, 32)


def _shape_body(shape: list[int], data: Any) -> bytes:
    return _json({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": data}]})


def test_tensor_element_limit_is_checked_on_the_shape() -> None:
    assert v2_codec.decode_request(
        _shape_body([2, 4], [0] * 8), None, max_elements=8, max_depth=32
    ).inputs[0].shape == (2, 4)
    # Data that would be huge is never looked at: the declared shape alone is refused.
    with pytest.raises(TensorTooLargeError, match="OPENMAAS_MAX_TENSOR_ELEMENTS") as caught:
        v2_codec.decode_request(
            _shape_body([3, 4], "not even data"), None, max_elements=8, max_depth=32
        )
    assert caught.value.status == 422
    assert caught.value.field == "inputs.x.shape"
    assert "8" in caught.value.detail


def test_tensor_element_limit_applies_to_binary_inputs() -> None:
    header, body = _binary_body([("x", "UINT8", [3, 4], b"\x00" * 12)])
    with pytest.raises(TensorTooLargeError):
        v2_codec.decode_request(body, len(header), max_elements=8, max_depth=32)


@pytest.mark.parametrize(
    "shape",
    [[2**40 + 1], [2**62, 2**62], [2**40 + 1, 0], [10**6] * 30, [0, 2**64]],
    ids=["huge-dim", "overflow", "huge-with-zero", "product", "beyond-int64"],
)
def test_absurd_shapes_are_too_large(shape: list[int]) -> None:
    with pytest.raises(TensorTooLargeError) as caught:
        decode_request(_shape_body(shape, []), None)
    assert caught.value.field == "inputs.x.shape"


def test_too_many_dimensions() -> None:
    with pytest.raises(BadRequestError, match="dimensions") as caught:
        decode_request(_shape_body([1] * 70, [1]), None)
    assert caught.value.field == "inputs.x.shape"


def test_body_must_be_an_object() -> None:
    with pytest.raises(BadRequestError) as caught:
        decode_request(b"[1, 2]", None)
    assert caught.value.field == "body"


# -- binary requests --------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(VALUES))
def test_binary_data_for_every_datatype(datatype: str) -> None:
    want = _expected(datatype)
    header, body = _binary_body([("x", datatype, [2, 3], _raw(datatype, want))])
    [tensor] = decode_request(body, len(header)).inputs
    _assert_same(tensor.array, want)


def test_binary_and_json_inputs_mix_in_order() -> None:
    a = np.arange(4, dtype=np.int16).reshape(2, 2)
    b = np.array([b"\x00\xff", b"ok"], dtype=object)
    header = _json(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "INT16",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": 8},
                },
                {"name": "j", "datatype": "FP64", "shape": [1], "data": [0.5]},
                {
                    "name": "b",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": 12},
                },
            ]
        }
    )
    request = decode_request(header + _raw("INT16", a) + _raw("BYTES", b), len(header))
    assert [t.name for t in request.inputs] == ["a", "j", "b"]
    _assert_same(request.inputs[0].array, a)
    _assert_same(request.inputs[1].array, np.array([0.5]))
    _assert_same(request.inputs[2].array, b)


def test_binary_bytes_may_hold_any_bytes() -> None:
    want = np.empty(3, dtype=object)
    want[:] = [b"\x00\xff\xfe", b"", bytes(range(256))]
    header, body = _binary_body([("x", "BYTES", [3], _raw("BYTES", want))])
    _assert_same(decode_request(body, len(header)).inputs[0].array, want)


def test_binary_data_size_too_large() -> None:
    header, body = _binary_body([("x", "FP32", [2], b"\x00" * 8)])
    with pytest.raises(BadRequestError, match="does not fit") as caught:
        decode_request(body[:-1], len(header))
    assert caught.value.field == "inputs.x.parameters.binary_data_size"


@pytest.mark.parametrize("size", [-1, "8", 1.5, None])
def test_binary_data_size_must_be_a_byte_count(size: Any) -> None:
    header = _json(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "UINT8",
                    "shape": [1],
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    with pytest.raises(BadRequestError):
        decode_request(header + b"\x01", len(header))


def test_binary_data_size_true_is_not_one_byte() -> None:
    header = _json(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "UINT8",
                    "shape": [1],
                    "parameters": {"binary_data_size": True},
                }
            ]
        }
    )
    with pytest.raises(BadRequestError):
        decode_request(header + b"\x01", len(header))


def test_binary_size_that_does_not_fill_the_shape() -> None:
    header, body = _binary_body([("x", "FP32", [3], b"\x00" * 8)])
    with pytest.raises(DataLengthMismatchError) as caught:
        decode_request(body, len(header))
    assert caught.value.field == "inputs.x.parameters.binary_data_size"


def test_binary_bytes_element_count_mismatch() -> None:
    raw = _raw("BYTES", np.array([b"a", b"b"], dtype=object))
    header, body = _binary_body([("x", "BYTES", [3], raw)])
    with pytest.raises(DataLengthMismatchError):
        decode_request(body, len(header))


@pytest.mark.parametrize(
    "raw",
    [b"\x01\x00", struct.pack("<I", 10) + b"short", struct.pack("<I", 1) + b"a" + b"\x00"],
    ids=["truncated-length", "element-past-end", "trailing-partial-length"],
)
def test_truncated_binary_bytes(raw: bytes) -> None:
    header, body = _binary_body([("x", "BYTES", [1], raw)])
    with pytest.raises(InvalidInputError) as caught:
        decode_request(body, len(header))
    assert caught.value.field == "inputs.x"


def test_trailing_unclaimed_bytes() -> None:
    header, body = _binary_body([("x", "UINT8", [2], b"\x01\x02")])
    with pytest.raises(BadRequestError, match="not claimed") as caught:
        decode_request(body + b"\x00", len(header))
    assert caught.value.field == "Inference-Header-Content-Length"


def test_binary_bytes_without_binary_inputs_are_unclaimed() -> None:
    header = _json({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})
    with pytest.raises(BadRequestError, match="not claimed"):
        decode_request(header + b"junk", len(header))


@pytest.mark.parametrize("delta", [1, 1000])
def test_header_length_beyond_the_body(delta: int) -> None:
    _, body = _binary_body([("x", "UINT8", [1], b"\x01")])
    with pytest.raises(BadRequestError) as caught:
        decode_request(body, len(body) + delta)
    assert caught.value.field == "Inference-Header-Content-Length"


def test_negative_header_length() -> None:
    with pytest.raises(BadRequestError) as caught:
        decode_request(b"{}", -1)
    assert caught.value.field == "Inference-Header-Content-Length"


def test_header_length_that_cuts_the_json() -> None:
    header, body = _binary_body([("x", "UINT8", [1], b"\x01")])
    with pytest.raises(MalformedJSONError):
        decode_request(body, len(header) - 1)


def test_header_length_equal_to_body_is_plain_json() -> None:
    body = _json({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [-3]}]})
    _assert_same(decode_request(body, len(body)).inputs[0].array, np.array([-3], dtype=np.int8))


# -- responses --------------------------------------------------------------------------


def _response(*tensors: Tensor) -> InferenceResponse:
    return InferenceResponse("admin/m", "3", list(tensors), id="r1")


def _tensor(name: str, datatype: str) -> Tensor:
    array = _expected(datatype)
    return Tensor(name, datatype, array.shape, array)


def _request(outputs: list[RequestedOutput] | None = None, **parameters: Any) -> InferenceRequest:
    return InferenceRequest([], outputs or [], None, parameters)


def test_json_response() -> None:
    body, header_length = encode_response(
        _response(_tensor("p", "FP32"), _tensor("w", "BYTES"), _tensor("b", "BOOL")), _request()
    )
    assert header_length is None
    document = json.loads(body)
    assert document["model_name"] == "admin/m"
    assert document["model_version"] == "3"
    assert document["id"] == "r1"
    assert [o["name"] for o in document["outputs"]] == ["p", "w", "b"]
    p, w, b = document["outputs"]
    assert p["datatype"] == "FP32"
    assert p["shape"] == [2, 3]
    np.testing.assert_allclose(p["data"], np.float32(VALUES["FP32"]), rtol=1e-7)
    assert w["data"] == VALUES["BYTES"]
    assert b["data"] == VALUES["BOOL"]
    assert "parameters" not in p


@pytest.mark.parametrize("datatype", list(VALUES))
def test_json_response_for_every_datatype(datatype: str) -> None:
    body, _ = encode_response(_response(_tensor("o", datatype)), _request())
    [output] = json.loads(body)["outputs"]
    assert output["datatype"] == datatype
    assert output["shape"] == [2, 3]
    decoded = _decode_one(datatype, output["shape"], output["data"])
    _assert_same(decoded, _expected(datatype))


def test_json_response_is_strict_json() -> None:
    """NaN and Infinity are not JSON: strict parsers (JavaScript, Go) reject them."""
    nan = np.array([np.nan, np.inf, 1.0], dtype=np.float32)
    body, _ = encode_response(_response(Tensor("o", "FP32", (3,), nan)), _request())

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    json.loads(body, parse_constant=refuse)


def test_binary_output_per_output_parameter() -> None:
    request = _request([RequestedOutput("a", {"binary_data": True}), RequestedOutput("b")])
    body, header_length = encode_response(
        _response(_tensor("a", "INT32"), _tensor("b", "INT32")), request
    )
    assert header_length is not None
    document = json.loads(body[:header_length])
    a, b = document["outputs"]
    assert "data" not in a
    assert a["parameters"] == {"binary_data_size": 24}
    assert b["data"] == VALUES["INT32"]
    assert body[header_length:] == _raw("INT32", _expected("INT32"))


def test_binary_output_for_the_whole_request() -> None:
    body, header_length = encode_response(
        _response(_tensor("a", "FP64"), _tensor("b", "UINT8")), _request(binary_data_output=True)
    )
    assert header_length is not None
    a, b = json.loads(body[:header_length])["outputs"]
    assert a["parameters"]["binary_data_size"] == 48
    assert b["parameters"]["binary_data_size"] == 6
    assert body[header_length:] == _raw("FP64", _expected("FP64")) + _raw(
        "UINT8", _expected("UINT8")
    )


def test_per_output_parameter_overrides_the_request() -> None:
    request = _request([RequestedOutput("b", {"binary_data": False})], binary_data_output=True)
    body, header_length = encode_response(
        _response(_tensor("a", "INT8"), _tensor("b", "INT8")), request
    )
    assert header_length is not None
    a, b = json.loads(body[:header_length])["outputs"]
    assert a["parameters"] == {"binary_data_size": 6}
    assert b["data"] == VALUES["INT8"]
    assert len(body) == header_length + 6


def test_binary_data_false_everywhere_is_json() -> None:
    request = _request([RequestedOutput("a", {"binary_data": False})], binary_data_output=False)
    body, header_length = encode_response(_response(_tensor("a", "INT8")), request)
    assert header_length is None
    assert json.loads(body)["outputs"][0]["data"] == VALUES["INT8"]


def test_binary_response_round_trips_through_the_decoder() -> None:
    tensors = [_tensor(f"o_{dt}", dt) for dt in VALUES]
    body, header_length = encode_response(_response(*tensors), _request(binary_data_output=True))
    assert header_length is not None
    header = json.loads(body[:header_length])
    as_request = _json({"inputs": header["outputs"]})
    decoded = decode_request(as_request + body[header_length:], len(as_request))
    assert [t.name for t in decoded.inputs] == [t.name for t in tensors]
    for got, want in zip(decoded.inputs, tensors, strict=True):
        assert got.datatype == want.datatype
        _assert_same(got.array, want.array)


def test_response_parameters_and_missing_id() -> None:
    response = InferenceResponse("m", "1", [_tensor("a", "INT8")], parameters={"k": "v"})
    document = json.loads(encode_response(response, _request())[0])
    assert "id" not in document
    assert document["parameters"] == {"k": "v"}


def test_non_utf8_bytes_output_in_json_is_escaped() -> None:
    array = np.empty(1, dtype=object)
    array[:] = [b"\xffok"]
    body, _ = encode_response(_response(Tensor("o", "BYTES", (1,), array)), _request())
    assert json.loads(body)["outputs"][0]["data"] == ["\\xffok"]

"""validate_request: each way a request can miss the signature has its own error and field."""

from __future__ import annotations

import numpy as np
import pytest

from openmaas.errors import (
    DatatypeMismatchError,
    InvalidInputError,
    MissingInputError,
    OpenMaaSError,
    ShapeMismatchError,
    UnknownInputError,
    UnknownOutputError,
)
from openmaas.runtimes import Signature, TensorSpec
from openmaas.serving.types import InferenceRequest, RequestedOutput, Tensor
from openmaas.serving.validation import validate_request

SIGNATURE = Signature(
    inputs=(
        TensorSpec("features", "FP32", (-1, 4)),
        TensorSpec("mask", "BOOL", (-1,)),
    ),
    outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("scores", "FP32", (-1, 2))),
)


def _tensor(name: str, datatype: str, shape: tuple[int, ...]) -> Tensor:
    dtype = (
        object
        if datatype == "BYTES"
        else {"FP32": np.float32, "BOOL": np.bool_}.get(datatype, np.int64)
    )
    return Tensor(name, datatype, shape, np.zeros(shape, dtype=dtype))


def _request(*tensors: Tensor, outputs: tuple[str, ...] = ()) -> InferenceRequest:
    return InferenceRequest(list(tensors), [RequestedOutput(o) for o in outputs])


FEATURES = _tensor("features", "FP32", (2, 4))
MASK = _tensor("mask", "BOOL", (2,))


def _error(request: InferenceRequest) -> OpenMaaSError:
    with pytest.raises(InvalidInputError) as caught:
        validate_request(SIGNATURE, request)
    return caught.value


def test_valid_request_passes() -> None:
    validate_request(SIGNATURE, _request(FEATURES, MASK))
    validate_request(SIGNATURE, _request(MASK, FEATURES, outputs=("scores", "label")))
    validate_request(SIGNATURE, _request(_tensor("features", "FP32", (0, 4)), MASK))


def test_unknown_input() -> None:
    error = _error(_request(FEATURES, MASK, _tensor("extra", "FP32", (2,))))
    assert type(error) is UnknownInputError
    assert error.field == "inputs.extra"
    assert "'features' (FP32 [N, 4])" in error.detail
    assert "'mask' (BOOL [N])" in error.detail


def test_missing_input() -> None:
    error = _error(_request(MASK))
    assert type(error) is MissingInputError
    assert error.field == "inputs.features"
    assert "'features'" in error.detail


def test_all_missing_inputs_are_named() -> None:
    error = _error(InferenceRequest([]))
    assert type(error) is MissingInputError
    assert "'features'" in error.detail
    assert "'mask'" in error.detail


def test_duplicate_input() -> None:
    error = _error(_request(FEATURES, MASK, FEATURES))
    assert type(error) is UnknownInputError
    assert error.field == "inputs.features"
    assert "twice" in error.detail


def test_datatype_mismatch() -> None:
    error = _error(_request(_tensor("features", "FP64", (2, 4)), MASK))
    assert type(error) is DatatypeMismatchError
    assert error.field == "inputs.features.datatype"
    assert "FP32" in error.detail
    assert "FP64" in error.detail


@pytest.mark.parametrize("shape", [(2,), (2, 4, 1), ()], ids=["rank-1", "rank-3", "scalar"])
def test_rank_mismatch(shape: tuple[int, ...]) -> None:
    error = _error(_request(_tensor("features", "FP32", shape), MASK))
    assert type(error) is ShapeMismatchError
    assert error.field == "inputs.features.shape"
    assert "[N, 4]" in error.detail


@pytest.mark.parametrize("shape", [(2, 3), (2, 5), (1, 0)])
def test_fixed_dimension_mismatch(shape: tuple[int, ...]) -> None:
    error = _error(_request(_tensor("features", "FP32", shape), MASK))
    assert type(error) is ShapeMismatchError
    assert error.field == "inputs.features.shape"
    assert str(list(shape)) in error.detail


def test_unknown_requested_output() -> None:
    error = _error(_request(FEATURES, MASK, outputs=("label", "probability")))
    assert type(error) is UnknownOutputError
    assert error.field == "outputs.probability"
    assert "'label', 'scores'" in error.detail


def test_each_failure_has_its_own_code() -> None:
    failures = [
        _request(FEATURES, MASK, _tensor("extra", "FP32", (2,))),
        _request(MASK),
        _request(_tensor("features", "INT64", (2, 4)), MASK),
        _request(_tensor("features", "FP32", (2, 5)), MASK),
        _request(FEATURES, MASK, outputs=("nope",)),
    ]
    codes = [_error(r).code for r in failures]
    assert codes == [
        "unknown_input",
        "missing_input",
        "datatype_mismatch",
        "shape_mismatch",
        "unknown_output",
    ]
    assert all(_error(r).status == 400 for r in failures)

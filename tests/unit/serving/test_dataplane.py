"""DataPlane: resolve, check and run a request against real services."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from openmaas.bootstrap import Services
from openmaas.errors import (
    ModelNotFoundError,
    PermissionDeniedError,
    UnknownInputError,
    VersionNotFoundError,
)
from openmaas.registry import ModelRef
from openmaas.security import Principal
from openmaas.serving import InferenceRequest, RequestedOutput, Tensor
from tests.helpers.models import identity_model, scale_model

REF = ModelRef("admin", "scaler")


@pytest.fixture
def published(services: Services, admin: Principal) -> Services:
    services.registry.publish(admin, "scaler", scale_model(2.0))
    services.registry.publish(admin, "scaler", scale_model(3.0), alias="prod")
    return services


def _request(x: np.ndarray, name: str = "x") -> InferenceRequest:
    return InferenceRequest([Tensor(name, "FP32", x.shape, x)], id="req-1")


X = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_infer_runs_the_latest_version(published: Services, admin: Principal) -> None:
    response = asyncio.run(published.dataplane.infer(admin, REF, _request(X)))
    assert response.model_name == "admin/scaler"
    assert response.model_version == "2"
    assert response.id == "req-1"
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("y", "FP32", (2, 4))
    np.testing.assert_array_equal(output.array, X * 3)


def test_infer_a_pinned_version(published: Services, admin: Principal) -> None:
    response = asyncio.run(published.dataplane.infer(admin, REF, _request(X), "1"))
    assert response.model_version == "1"
    np.testing.assert_array_equal(response.outputs[0].array, X * 2)


def test_requested_outputs_only(services: Services, admin: Principal) -> None:
    services.registry.publish(admin, "ids", identity_model(["INT32", "BYTES"]))
    ints = np.arange(6, dtype=np.int32).reshape(2, 3)
    words = np.array([[b"a", b"b", b"c"], [b"d", b"e", b"f"]], dtype=object)
    request = InferenceRequest(
        [Tensor("in_INT32", "INT32", (2, 3), ints), Tensor("in_BYTES", "BYTES", (2, 3), words)],
        [RequestedOutput("out_BYTES")],
    )
    response = asyncio.run(services.dataplane.infer(admin, ModelRef(None, "ids"), request))
    assert [(o.name, o.datatype) for o in response.outputs] == [("out_BYTES", "BYTES")]
    assert response.outputs[0].array.tolist() == words.tolist()


def test_invalid_request_never_reaches_the_backend(published: Services, admin: Principal) -> None:
    engine = published.engine
    with pytest.raises(UnknownInputError):
        asyncio.run(published.dataplane.infer(admin, REF, _request(X, "features")))
    resolved = published.registry.resolve(admin, REF)
    assert not engine.is_loaded(str(resolved.blob_sha256))
    asyncio.run(published.dataplane.infer(admin, REF, _request(X)))
    assert engine.is_loaded(str(resolved.blob_sha256))


def test_viewer_cannot_infer_but_can_read_metadata(published: Services, admin: Principal) -> None:
    _, token = published.accounts.create_key(admin, name="v", role="viewer")
    viewer = published.accounts.authenticate(token)
    with pytest.raises(PermissionDeniedError):
        asyncio.run(published.dataplane.infer(viewer, REF, _request(X)))
    assert published.dataplane.metadata(viewer, REF)["name"] == "admin/scaler"


def test_metadata_and_ready(published: Services, admin: Principal) -> None:
    assert published.dataplane.metadata(admin, REF, "prod") == {
        "name": "admin/scaler",
        "versions": ["2"],
        "platform": "onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    }
    assert published.dataplane.ready(admin, REF, "1") is True
    with pytest.raises(VersionNotFoundError):
        published.dataplane.ready(admin, REF, "7")
    with pytest.raises(ModelNotFoundError):
        published.dataplane.metadata(admin, ModelRef("admin", "missing"))

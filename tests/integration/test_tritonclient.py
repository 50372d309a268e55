"""The official tritonclient[http] works unchanged, with its binary-tensor defaults."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from openmaas import Client
from tests.helpers.models import breast_cancer_rows, identity_model, tabular_classifier
from tests.helpers.server import LiveServer


@pytest.fixture(scope="module")
def published(server: LiveServer) -> str:
    with Client(server.url, server.admin_key) as client:
        client.publish(tabular_classifier(), "triton-cancer")
        client.publish(identity_model(), "triton-identity")
    return "admin/triton-cancer"


@pytest.fixture
def triton_client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    opened = triton.InferenceServerClient(f"{server.host}:{server.port}")
    yield opened
    opened.close()


def _auth(server: LiveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_key}"}


def test_health_and_metadata(
    triton_client: triton.InferenceServerClient, server: LiveServer, published: str
) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(published, headers=_auth(server))
    metadata = triton_client.get_model_metadata(published, headers=_auth(server))
    assert metadata["name"] == published
    assert metadata["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 30]}]
    server_meta = triton_client.get_server_metadata(headers=_auth(server))
    assert "binary_tensor_data" in server_meta["extensions"]


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("version", ["", "1"])
def test_infer_matches_onnxruntime(
    triton_client: triton.InferenceServerClient,
    server: LiveServer,
    published: str,
    binary: bool,
    version: str,
) -> None:
    rows = breast_cancer_rows(6)
    tensor = triton.InferInput("float_input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = None
    if not binary:
        outputs = [
            triton.InferRequestedOutput("output_label", binary_data=False),
            triton.InferRequestedOutput("output_probability", binary_data=False),
        ]
    result = triton_client.infer(
        published,
        [tensor],
        model_version=version,
        outputs=outputs,
        request_id="abc",
        headers=_auth(server),
    )
    assert result.get_response()["id"] == "abc"
    session = ort.InferenceSession(tabular_classifier(), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"float_input": rows})
    np.testing.assert_array_equal(result.as_numpy("output_label"), labels)
    expected = np.array([[p[0], p[1]] for p in probabilities], dtype=np.float32)
    np.testing.assert_allclose(result.as_numpy("output_probability"), expected, rtol=1e-6)


def test_every_datatype_through_tritonclient(
    triton_client: triton.InferenceServerClient, server: LiveServer, published: str
) -> None:
    arrays = {
        "BOOL": np.array([[True, False, True]]),
        "UINT8": np.array([[0, 1, 255]], np.uint8),
        "UINT16": np.array([[0, 1, 65535]], np.uint16),
        "UINT32": np.array([[0, 1, 2**32 - 1]], np.uint32),
        "UINT64": np.array([[0, 1, 2**64 - 1]], np.uint64),
        "INT8": np.array([[-128, 0, 127]], np.int8),
        "INT16": np.array([[-1, 0, 1]], np.int16),
        "INT32": np.array([[-1, 0, 1]], np.int32),
        "INT64": np.array([[-(2**63), 0, 2**63 - 1]], np.int64),
        "FP16": np.array([[0.5, -1.0, 2.0]], np.float16),
        "FP32": np.array([[0.5, -1.0, 2.0]], np.float32),
        "FP64": np.array([[0.5, -1.0, 1e300]], np.float64),
        "BYTES": np.array([[b"a", b"", "é".encode()]], dtype=np.object_),
    }
    inputs = []
    for datatype, array in arrays.items():
        tensor = triton.InferInput(f"in_{datatype}", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = triton_client.infer("admin/triton-identity", inputs, headers=_auth(server))
    for datatype, array in arrays.items():
        np.testing.assert_array_equal(result.as_numpy(f"out_{datatype}"), array)


def test_errors_surface_as_triton_exceptions(
    triton_client: triton.InferenceServerClient, server: LiveServer, published: str
) -> None:
    tensor = triton.InferInput("float_input", [1, 29], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 29), np.float32))
    with pytest.raises(InferenceServerException) as info:
        triton_client.infer(published, [tensor], headers=_auth(server))
    assert "shape" in str(info.value)
    with pytest.raises(InferenceServerException):
        triton_client.get_model_metadata(published)  # no API key

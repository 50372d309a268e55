"""OIP inference in process: JSON and binary tensors, every datatype, every bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from openmaas.app import create_app
from openmaas.bootstrap import build_services, initialize
from openmaas.settings import Settings
from tests.helpers.models import (
    ONNX_TYPES,
    breast_cancer_rows,
    identity_model,
    scale_model,
    tabular_classifier,
)

SAMPLES = {
    "BOOL": [[True, False, True]],
    "UINT8": [[0, 7, 255]],
    "UINT16": [[0, 7, 65535]],
    "UINT32": [[0, 7, 4294967295]],
    "UINT64": [[0, 7, 18446744073709551615]],
    "INT8": [[-128, 0, 127]],
    "INT16": [[-32768, 0, 32767]],
    "INT32": [[-2147483648, 0, 2147483647]],
    "INT64": [[-9223372036854775808, 0, 9223372036854775807]],
    "FP16": [[0.5, -1.25, 2048.0]],
    "FP32": [[0.1, -2.5, 3e30]],
    "FP64": [[0.1, -2.5, 1e300]],
    "BYTES": [["héllo", "", "wörld"]],
}


@pytest.fixture
def identity(http: TestClient) -> str:
    assert (
        http.post("/api/v1/models/identity/versions", content=identity_model()).status_code == 201
    )
    return "admin/identity"


def test_tabular_inference_matches_onnxruntime(http: TestClient) -> None:
    http.post("/api/v1/models/cancer/versions", content=tabular_classifier())
    rows = breast_cancer_rows(5)
    body = {
        "id": "req-42",
        "inputs": [
            {"name": "float_input", "datatype": "FP32", "shape": [5, 30], "data": rows.tolist()}
        ],
    }
    response = http.post("/v2/models/admin/cancer/infer", json=body)
    assert response.status_code == 200
    result = response.json()
    assert result["id"] == "req-42"
    assert (result["model_name"], result["model_version"]) == ("admin/cancer", "1")
    outputs = {o["name"]: o for o in result["outputs"]}
    session = ort.InferenceSession(tabular_classifier(), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"float_input": rows})
    assert outputs["output_label"]["data"] == labels.tolist()
    expected = [[p[0], p[1]] for p in probabilities]  # ZipMap dicts in the original model
    assert outputs["output_probability"]["shape"] == [5, 2]
    got = np.array(outputs["output_probability"]["data"]).reshape(5, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_bare_name_version_path_and_requested_outputs(http: TestClient) -> None:
    http.post("/api/v1/models/cancer/versions", content=tabular_classifier())
    body = {
        "inputs": [
            {
                "name": "float_input",
                "datatype": "FP32",
                "shape": [1, 30],
                "data": breast_cancer_rows(1).reshape(-1).tolist(),
            }
        ],
        "outputs": [{"name": "output_label"}],
    }
    response = http.post("/v2/models/cancer/versions/1/infer", json=body).json()
    assert [o["name"] for o in response["outputs"]] == ["output_label"]
    assert http.get("/v2/models/cancer/versions/1/ready").json()["ready"] is True
    assert http.get("/v2/models/admin/cancer/ready").json()["ready"] is True
    meta = http.get("/v2/models/cancer/versions/1").json()
    assert meta["name"] == "admin/cancer"
    assert meta["versions"] == ["1"]


@pytest.mark.parametrize("datatype", list(ONNX_TYPES))
def test_every_datatype_round_trips_as_json(http: TestClient, identity: str, datatype: str) -> None:
    inputs = [
        {"name": f"in_{dt}", "datatype": dt, "shape": [1, 3], "data": SAMPLES[dt]}
        for dt in ONNX_TYPES
    ]
    body = {"inputs": inputs, "outputs": [{"name": f"out_{datatype}"}]}
    response = http.post(f"/v2/models/{identity}/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["datatype"] == datatype
    assert output["shape"] == [1, 3]
    if datatype in ("FP16", "FP32"):
        dtype = np.float16 if datatype == "FP16" else np.float32
        expected = np.asarray(SAMPLES[datatype][0], dtype=dtype).astype(np.float64)
        np.testing.assert_array_equal(output["data"], expected)
    else:
        assert output["data"] == SAMPLES[datatype][0]


def _binary_body(arrays: dict[str, tuple[str, np.ndarray]], binary_output: bool) -> bytes:
    inputs, chunks = [], []
    for name, (datatype, array) in arrays.items():
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(v)) + v for v in array.reshape(-1))
        else:
            raw = array.tobytes()
        inputs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    header = json.dumps(
        {"inputs": inputs, "parameters": {"binary_data_output": binary_output}}
    ).encode()
    return header, b"".join(chunks)


def test_every_datatype_round_trips_as_binary(http: TestClient, identity: str) -> None:
    arrays = {}
    for dt in ONNX_TYPES:
        if dt == "BYTES":
            values = np.array([[s.encode() for s in SAMPLES[dt][0]]], dtype=object)
        else:
            values = np.asarray(SAMPLES[dt], dtype=np.dtype(_numpy(dt)))
        arrays[f"in_{dt}"] = (dt, values)
    header, data = _binary_body(arrays, binary_output=True)
    response = http.post(
        f"/v2/models/{identity}/infer",
        content=header + data,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    split = int(response.headers["inference-header-content-length"])
    document = json.loads(response.content[:split])
    offset = split
    for output in document["outputs"]:
        size = output["parameters"]["binary_data_size"]
        raw = response.content[offset : offset + size]
        offset += size
        dt = output["datatype"]
        sent = arrays[output["name"].replace("out_", "in_")][1]
        if dt == "BYTES":
            assert raw == b"".join(struct.pack("<I", len(v)) + v for v in sent.reshape(-1))
        else:
            np.testing.assert_array_equal(np.frombuffer(raw, dtype=sent.dtype), sent.reshape(-1))
    assert offset == len(response.content)


def _numpy(datatype: str) -> str:
    return {"BOOL": "bool", "FP16": "float16", "FP32": "float32", "FP64": "float64"}.get(
        datatype, datatype.lower()
    )


def _problem(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["code"] == code
    assert body["status"] == status
    assert body["detail"]
    return body


def test_bad_inputs_get_precise_problems(http: TestClient) -> None:
    http.post("/api/v1/models/scale/versions", content=scale_model())
    url = "/v2/models/admin/scale/infer"

    def send(tensor: dict[str, object]) -> object:
        return http.post(url, json={"inputs": [tensor]})

    good = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    assert http.post(url, json={"inputs": [good]}).status_code == 200
    body = _problem(send({**good, "name": "y"}), 400, "unknown_input")
    assert "'x'" in str(body["detail"])
    _problem(send({**good, "datatype": "FP64"}), 400, "datatype_mismatch")
    _problem(send({**good, "shape": [1, 3], "data": [1, 2, 3]}), 400, "shape_mismatch")
    _problem(send({**good, "shape": [4]}), 400, "shape_mismatch")
    _problem(send({**good, "data": [1, 2, 3]}), 400, "data_length_mismatch")
    _problem(send({**good, "data": ["a", "b", "c", "d"]}), 400, "invalid_input")
    _problem(send({**good, "datatype": "FP8"}), 400, "invalid_input")
    _problem(http.post(url, json={"inputs": []}), 400, "bad_request")
    _problem(
        http.post(url, json={"inputs": [good], "outputs": [{"name": "z"}]}), 400, "unknown_output"
    )
    _problem(http.post(url, content=b'{"inputs": [', headers={}), 400, "malformed_json")
    _problem(http.post(url, content=b"[1, 2]"), 400, "bad_request")


def test_unknown_models_versions_and_routes(http: TestClient) -> None:
    http.post("/api/v1/models/scale/versions", content=scale_model())
    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    _problem(http.post("/v2/models/admin/nope/infer", json=good), 404, "model_not_found")
    _problem(http.post("/v2/models/nobody/scale/infer", json=good), 404, "model_not_found")
    _problem(
        http.post("/v2/models/admin/scale/versions/9/infer", json=good), 404, "version_not_found"
    )
    _problem(http.get("/v2/models/admin/scale/versions/beta"), 404, "version_not_found")
    _problem(http.get("/v2/models/admin/scale/infer"), 405, "method_not_allowed")
    _problem(http.post("/v2/models/admin/scale", json=good), 405, "method_not_allowed")
    _problem(http.get("/v2/models/a/b/c/d"), 404, "not_found")
    _problem(http.get("/nowhere"), 404, "route_not_found")


def test_binary_framing_errors_are_400(http: TestClient) -> None:
    http.post("/api/v1/models/scale/versions", content=scale_model())
    url = "/v2/models/admin/scale/infer"
    header, data = _binary_body({"x": ("FP32", np.ones((1, 4), np.float32))}, False)
    ok = http.post(
        url, content=header + data, headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert ok.json()["outputs"][0]["data"] == [2.0] * 4
    for length, body in [
        ("abc", header + data),
        (str(len(header) + 999), header + data),
        (str(len(header)), header + data[:-4]),
        (str(len(header)), header + data + b"tail"),
    ]:
        response = http.post(url, content=body, headers={"Inference-Header-Content-Length": length})
        assert response.status_code == 400, (length, response.text)


def test_request_over_the_body_limit_is_413(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", demo_models=False, max_request_bytes=4096)
    services = build_services(settings)
    key = initialize(services).admin_key
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings, services), headers=headers) as http:
        http.post("/api/v1/models/scale/versions", content=scale_model())
        big = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1000, 4], "data": [1.5] * 4000}]
        }
        response = http.post("/v2/models/admin/scale/infer", json=big)
        _problem(response, 413, "payload_too_large")

        def chunks() -> object:
            for _ in range(10):
                yield b" " * 1024

        streamed = http.post("/v2/models/admin/scale/infer", content=chunks())
        _problem(streamed, 413, "payload_too_large")
        assert http.get("/v2/health/live").status_code == 200


def test_tensor_element_limit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", demo_models=False, max_tensor_elements=8)
    services = build_services(settings)
    key = initialize(services).admin_key
    with TestClient(create_app(settings, services)) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        http.post("/api/v1/models/scale/versions", content=scale_model())
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": [1] * 12}]}
        response = http.post("/v2/models/scale/infer", json=body)
        problem = _problem(response, 422, "tensor_too_large")
        assert "OPENMAAS_MAX_TENSOR_ELEMENTS" in str(problem["detail"])
        assert problem["field"] == "inputs.x.shape"
        # Only the declared shape counts: the data of an absurd shape is never allocated.
        body["inputs"][0]["shape"] = [2**62, 2**62]
        _problem(http.post("/v2/models/scale/infer", json=body), 422, "tensor_too_large")

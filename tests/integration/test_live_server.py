"""The real server on 127.0.0.1 driven by the Python client."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from openmaas import Client
from openmaas.errors import ModelNotFoundError, PermissionDeniedError, UnknownInputError
from tests.helpers.models import breast_cancer_rows, scale_model, tabular_classifier
from tests.helpers.server import LiveServer


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, server.admin_key) as opened:
        yield opened


def test_first_start_prints_the_key_once_and_keeps_it_private(server: LiveServer) -> None:
    log = server.log_file.read_text()
    assert log.count(server.admin_key) == 2  # the key line and the export line
    mode = stat.S_IMODE((server.data_dir / "admin.key").stat().st_mode)
    assert mode == 0o600


def test_demo_models_are_published_and_answer(client: Client) -> None:
    ids = {m["id"]: m for m in client.list_models()}
    assert ids["admin/breast-cancer"]["visibility"] == "public"
    assert ids["admin/digits"]["latest_version"] == 1
    rows = breast_cancer_rows(2)
    result = client.infer("admin/breast-cancer", {"float_input": rows})
    assert result["output_label"].tolist() == [0, 0]  # both rows are malignant tumours
    assert result["output_probability"].shape == (2, 2)
    np.testing.assert_allclose(result["output_probability"].sum(axis=1), [1, 1], rtol=1e-5)


def test_publish_and_infer_match_onnxruntime_in_process(client: Client) -> None:
    published = client.publish(tabular_classifier(), "live-cancer", description="test")
    assert published["version"] == 1
    rows = breast_cancer_rows(8)
    result = client.infer("admin/live-cancer", {"float_input": rows.tolist()})
    session = ort.InferenceSession(tabular_classifier(), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"float_input": rows})
    np.testing.assert_array_equal(result["output_label"], labels)
    expected = np.array([[p[0], p[1]] for p in probabilities], dtype=np.float32)
    np.testing.assert_allclose(result["output_probability"], expected, rtol=1e-6)
    again = client.publish(scale_model(), "live-cancer", alias="prod")
    assert again["version"] == 2
    detail = client.get_model("admin/live-cancer")
    assert detail["aliases"] == {"latest": 2, "prod": 2}
    client.set_alias("admin/live-cancer", "prod", 1)
    via_alias = client.infer("admin/live-cancer", {"float_input": rows}, version="prod")
    np.testing.assert_array_equal(via_alias["output_label"], labels)


def test_client_raises_the_server_error_classes(client: Client) -> None:
    with pytest.raises(ModelNotFoundError):
        client.infer("admin/no-such-model", {"x": [[1.0]]})
    client.publish(scale_model(), "live-scale")
    with pytest.raises(UnknownInputError) as info:
        client.infer("admin/live-scale", {"wrong": [[1.0, 2.0, 3.0, 4.0]]})
    assert info.value.field == "inputs.wrong"
    lab = client.create_tenant("live-lab")
    with Client(client.url, lab["api_key"]) as lab_client:
        with pytest.raises(PermissionDeniedError):
            lab_client.create_tenant("sneaky")
        with pytest.raises(ModelNotFoundError):
            lab_client.get_model("admin/live-scale")


def test_concurrent_requests_are_all_answered_correctly(client: Client, server: LiveServer) -> None:
    client.publish(scale_model(3.0), "live-concurrent")
    inputs = [np.full((1, 4), i, dtype=np.float32) for i in range(100)]

    def call(x: np.ndarray) -> np.ndarray:
        with Client(server.url, server.admin_key) as own:
            return own.infer("admin/live-concurrent", {"x": x})["y"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, inputs))
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 3)


def test_garbage_never_breaks_the_server(server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    url = f"{server.url}/v2/models/admin/digits/infer"
    for body in [b"\xff\xfe\x00", b"{" * 10000, b'{"inputs": "x"}', b"null", b"1e999999"]:
        response = httpx.post(url, content=body, headers=headers)
        assert 400 <= response.status_code < 500, body[:20]
        assert response.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200

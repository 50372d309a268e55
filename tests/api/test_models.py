"""Publishing versions, aliases, listing and showing models over the management API."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from openmaas.app import create_app
from openmaas.bootstrap import build_services, initialize
from openmaas.settings import Settings
from tests.helpers.models import scale_model, tabular_classifier


def test_publish_makes_versions_and_latest_follows(http: TestClient) -> None:
    first = http.post("/api/v1/models/fraud/versions", content=scale_model(2.0))
    assert first.status_code == 201
    assert first.json()["model"] == "admin/fraud"
    assert first.json()["version"] == 1
    second = http.post("/api/v1/models/admin/fraud/versions?alias=prod", content=scale_model(5.0))
    assert second.json()["version"] == 2
    detail = http.get("/api/v1/models/admin/fraud").json()
    assert detail["aliases"] == {"latest": 2, "prod": 2}
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    signature = detail["versions"][0]["signature"]
    assert signature["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    moved = http.put("/api/v1/models/admin/fraud/aliases/prod", json={"version": 1})
    assert moved.json()["aliases"]["prod"] == 1
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}
    prod = http.post("/v2/models/admin/fraud/versions/prod/infer", json=body).json()
    latest = http.post("/v2/models/admin/fraud/infer", json=body).json()
    assert (prod["model_version"], prod["outputs"][0]["data"]) == ("1", [2.0] * 4)
    assert (latest["model_version"], latest["outputs"][0]["data"]) == ("2", [5.0] * 4)


def test_alias_to_a_missing_version_is_404(http: TestClient) -> None:
    http.post("/api/v1/models/m/versions", content=scale_model())
    response = http.put("/api/v1/models/m/aliases/prod", json={"version": 7})
    assert response.status_code == 404
    assert response.json()["code"] == "version_not_found"


def test_card_records_description_producer_and_class_labels(http: TestClient) -> None:
    response = http.post(
        "/api/v1/models/cancer/versions",
        params={"description": "breast cancer forest"},
        content=tabular_classifier(),
    )
    card = response.json()["card"]
    assert card["description"] == "breast cancer forest"
    assert card["producer"].startswith("skl2onnx")
    assert card["class_labels"] == [0, 1]
    outputs = response.json()["signature"]["outputs"]
    assert {"name": "output_probability", "datatype": "FP32", "shape": [-1, 2]} in outputs


def test_list_shows_own_and_public_models(http: TestClient) -> None:
    http.post("/api/v1/models/b-private/versions", content=scale_model())
    http.post("/api/v1/models/a-public/versions?visibility=public", content=scale_model())
    rows = http.get("/api/v1/models").json()
    assert [(r["id"], r["visibility"], r["latest_version"]) for r in rows] == [
        ("admin/a-public", "public", 1),
        ("admin/b-private", "private", 1),
    ]
    changed = http.patch("/api/v1/models/admin/b-private", json={"visibility": "public"})
    assert changed.json()["summary"]["visibility"] == "public"
    bad = http.patch("/api/v1/models/admin/b-private", json={"visibility": "everyone"})
    assert bad.status_code == 422


def test_invalid_uploads_are_clear_400s(http: TestClient) -> None:
    for content in [b"", b"not a model at all", scale_model()[:40]]:
        response = http.post("/api/v1/models/broken/versions", content=content)
        assert response.status_code == 400, content[:20]
        assert response.json()["code"] == "invalid_artifact"
        assert "ONNX" in response.json()["detail"]
    assert http.get("/api/v1/models/broken").status_code == 404


def test_invalid_model_names_are_refused(http: TestClient) -> None:
    for name in ["Fraud", "-x", "infer", "a%20b"]:
        response = http.post(f"/api/v1/models/{name}/versions", content=scale_model())
        assert response.status_code == 422, name


def test_upload_over_the_artifact_limit_is_413(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", demo_models=False, max_artifact_bytes=2048)
    services = build_services(settings)
    key = initialize(services).admin_key
    with TestClient(create_app(settings, services)) as http:
        response = http.post(
            "/api/v1/models/big/versions",
            content=b"x" * 4096,
            headers={"Authorization": f"Bearer {key}"},
        )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_openapi_documents_the_routes(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    for path in ["/v2/models/{model_path}", "/api/v1/models/{model_id}/versions", "/api/v1/keys"]:
        assert path in paths

"""Model deployments, tenant weights and grant weights over the management API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from openmaas.serving.deployment import Deployment
from tests.helpers.models import scale_model

URL = "/api/v1/models/admin/fraud/deployment"
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def _lab(http: TestClient, name: str = "lab2") -> dict[str, str]:
    key = http.post("/api/v1/tenants", json={"name": name}).json()["api_key"]
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def fraud(http: TestClient) -> str:
    assert http.post("/api/v1/models/fraud/versions", content=scale_model()).status_code == 201
    return "admin/fraud"


# -- deployments ------------------------------------------------------------------------------


def test_a_new_model_shows_the_default_deployment(http: TestClient, fraud: str) -> None:
    shown = http.get(URL)
    assert shown.status_code == 200, shown.text
    assert shown.json() == Deployment().to_dict()
    assert http.get("/api/v1/models/fraud/deployment").json() == shown.json()  # bare name


def test_put_replaces_the_deployment(http: TestClient, fraud: str) -> None:
    wanted = {
        "min_replicas": 1,
        "max_replicas": 2,
        "max_batch_size": 16,
        "max_queue": 64,
        "cpu": 0.5,
        "memory_bytes": 1 << 20,
        "gpu": 0,
        "idle_seconds": 60,
        "isolation": "inline",
    }
    put = http.put(URL, json=wanted)
    assert put.status_code == 200, put.text
    assert put.json() == wanted
    assert http.get(URL).json() == wanted
    replaced = http.put(URL, json={"max_queue": 10, "max_batch_size": None}).json()
    assert replaced == {**Deployment().to_dict(), "max_queue": 10}  # the rest: defaults


def test_a_deployed_model_still_serves(http: TestClient, fraud: str) -> None:
    http.put(URL, json={"max_batch_size": 4, "max_queue": 8, "idle_seconds": 5})
    answer = http.post("/v2/models/admin/fraud/infer", json=BODY)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [2, 4, 6, 8]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"min_replicas": 3, "max_replicas": 2}, "deployment"),
        ({"min_replicas": -1}, "deployment"),
        ({"max_batch_size": 0}, "deployment"),
        ({"max_queue": 100_001}, "deployment"),
        ({"cpu": 0}, "deployment"),
        ({"isolation": "docker"}, "deployment"),
        ({"replicas": 2}, "body.replicas"),
        ({"max_queue": "many"}, "body.max_queue"),
        ({"max_queue": 2**60}, "body.max_queue"),
        ({"max_queue": True}, "body.max_queue"),
        ({"gpu": "1"}, "body.gpu"),
        ({"idle_seconds": False}, "body.idle_seconds"),
    ],
)
def test_invalid_deployments_are_422(
    http: TestClient, fraud: str, body: dict[str, object], field: str
) -> None:
    refused = http.put(URL, json=body)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "validation_error"
    assert problem.get("field") == field or field in {e["field"] for e in problem["errors"]}
    assert http.get(URL).json() == Deployment().to_dict()


def test_non_finite_numbers_are_422(http: TestClient, fraud: str) -> None:
    refused = http.put(URL, content=b'{"idle_seconds": NaN}')
    assert refused.status_code == 422, refused.text


def test_deployment_of_a_missing_or_foreign_private_model_is_404(
    http: TestClient, fraud: str
) -> None:
    lab2 = _lab(http)
    assert http.get("/api/v1/models/admin/missing/deployment").status_code == 404
    assert http.get(URL, headers=lab2).status_code == 404
    assert http.put(URL, json={}, headers=lab2).status_code == 404


def test_a_grantee_may_read_but_not_change_the_deployment(http: TestClient, fraud: str) -> None:
    lab2 = _lab(http)
    http.post("/api/v1/models/admin/fraud/grants", json={"tenant": "lab2"})
    assert http.get(URL, headers=lab2).status_code == 200
    refused = http.put(URL, json={"max_queue": 1}, headers=lab2)
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"


def test_deployment_is_a_reserved_name(http: TestClient) -> None:
    assert http.post("/api/v1/tenants", json={"name": "deployment"}).status_code == 422
    published = http.post("/api/v1/models/deployment/versions", content=scale_model())
    assert (published.status_code, published.json()["field"]) == (422, "name")


# -- tenant weights ---------------------------------------------------------------------------


def test_the_platform_admin_sets_a_tenant_weight(http: TestClient) -> None:
    lab2 = _lab(http)
    changed = http.patch("/api/v1/tenants/lab2", json={"weight": 2.5})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["name"], changed.json()["weight"]) == ("lab2", 2.5)
    weights = {t["name"]: t["weight"] for t in http.get("/api/v1/tenants").json()}
    assert weights == {"admin": 1.0, "lab2": 2.5}
    assert [t["weight"] for t in http.get("/api/v1/tenants", headers=lab2).json()] == [2.5]
    denied = http.patch("/api/v1/tenants/lab2", json={"weight": 100}, headers=lab2)
    assert denied.status_code == 403


@pytest.mark.parametrize(
    "body", [{"weight": 0}, {"weight": -2}, {"weight": 1001}, {"weight": True}, {}, {"w": 1}]
)
def test_invalid_tenant_weights_are_422(http: TestClient, body: dict[str, object]) -> None:
    _lab(http)
    refused = http.patch("/api/v1/tenants/lab2", json=body)
    assert refused.status_code == 422, refused.text


def test_the_weight_of_a_missing_tenant_is_404(http: TestClient) -> None:
    missing = http.patch("/api/v1/tenants/nobody", json={"weight": 2})
    assert missing.status_code == 404
    assert missing.json()["field"] == "tenant"


# -- grant weights ----------------------------------------------------------------------------


def test_a_share_carries_a_weight(http: TestClient, fraud: str) -> None:
    _lab(http)
    grants = "/api/v1/models/admin/fraud/grants"
    created = http.post(grants, json={"tenant": "lab2", "weight": 4})
    assert created.status_code == 201, created.text
    assert created.json()["weight"] == 4.0
    assert [(g["tenant"], g["weight"]) for g in http.get(grants).json()] == [("lab2", 4.0)]
    again = http.post(grants, json={"tenant": "lab2", "quota_per_day": 5}).json()
    assert (again["quota_per_day"], again["weight"]) == (5, None)
    refused = http.post(grants, json={"tenant": "lab2", "weight": 0})
    assert refused.status_code == 422
    assert refused.json()["field"] == "weight"

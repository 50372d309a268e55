"""Sharing a model with another tenant: grants, quotas, revocation, rate limits."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from openmaas.app import create_app
from openmaas.bootstrap import build_services, initialize
from openmaas.settings import Settings
from tests.helpers.models import scale_model

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def _lab(http: TestClient, name: str = "lab2") -> dict[str, str]:
    key = http.post("/api/v1/tenants", json={"name": name}).json()["api_key"]
    return {"Authorization": f"Bearer {key}"}


def test_share_lets_exactly_the_grantee_call_a_private_model(http: TestClient) -> None:
    http.post("/api/v1/models/fraud/versions", content=scale_model())
    lab2, lab3 = _lab(http, "lab2"), _lab(http, "lab3")
    url = "/v2/models/admin/fraud/infer"
    assert http.post(url, json=BODY, headers=lab2).status_code == 404
    created = http.post("/api/v1/models/admin/fraud/grants", json={"tenant": "lab2"})
    assert created.status_code == 201
    assert created.json()["tenant"] == "lab2"
    assert http.post(url, json=BODY, headers=lab2).json()["outputs"][0]["data"] == [2, 4, 6, 8]
    assert http.post(url, json=BODY, headers=lab3).status_code == 404
    listed = [m["id"] for m in http.get("/api/v1/models", headers=lab2).json()]
    assert "admin/fraud" in listed
    assert [g["tenant"] for g in http.get("/api/v1/models/admin/fraud/grants").json()] == ["lab2"]
    assert http.delete("/api/v1/models/admin/fraud/grants/lab2").status_code == 204
    assert http.post(url, json=BODY, headers=lab2).status_code == 404  # at once, despite caches


def test_grantee_cannot_manage_the_shared_model(http: TestClient) -> None:
    http.post("/api/v1/models/fraud/versions", content=scale_model())
    lab2 = _lab(http)
    http.post("/api/v1/models/admin/fraud/grants", json={"tenant": "lab2"})
    for method, path, body in [
        ("POST", "/api/v1/models/admin/fraud/grants", {"tenant": "lab2"}),
        ("PATCH", "/api/v1/models/admin/fraud", {"visibility": "public"}),
        ("PUT", "/api/v1/models/admin/fraud/aliases/prod", {"version": 1}),
    ]:
        response = http.request(method, path, json=body, headers=lab2)
        assert response.status_code == 403, path
    assert http.get("/api/v1/models/admin/fraud/grants", headers=lab2).status_code == 403


def test_grant_quota_answers_429_with_retry_after(http: TestClient) -> None:
    http.post("/api/v1/models/fraud/versions", content=scale_model())
    lab2 = _lab(http)
    http.post("/api/v1/models/admin/fraud/grants", json={"tenant": "lab2", "quota_per_day": 3})
    url = "/v2/models/admin/fraud/infer"
    assert [http.post(url, json=BODY, headers=lab2).status_code for _ in range(3)] == [200] * 3
    refused = http.post(url, json=BODY, headers=lab2)
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    assert http.post(url, json=BODY).status_code == 200  # the owner is not limited by it


def test_sharing_errors(http: TestClient) -> None:
    http.post("/api/v1/models/fraud/versions", content=scale_model())
    nobody = http.post("/api/v1/models/admin/fraud/grants", json={"tenant": "nobody"})
    assert nobody.status_code == 404
    own = http.post("/api/v1/models/admin/fraud/grants", json={"tenant": "admin"})
    assert own.status_code == 422
    bad_quota = http.post(
        "/api/v1/models/admin/fraud/grants", json={"tenant": "x", "quota_per_day": 0}
    )
    assert bad_quota.status_code == 422
    assert http.delete("/api/v1/models/admin/fraud/grants/lab9").status_code == 404
    assert http.get("/api/v1/models/admin/missing/grants").status_code == 404


def test_key_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", demo_models=False, key_rate_per_second=1, rate_burst_seconds=3
    )
    services = build_services(settings)
    key = initialize(services).admin_key
    with TestClient(create_app(settings, services)) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        http.post("/api/v1/models/m/versions", content=scale_model())
        codes = [http.post("/v2/models/m/infer", json=BODY).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200]
        assert codes[3:] == [429, 429]
        refused = http.post("/v2/models/m/infer", json=BODY)
        assert refused.json()["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        other = http.post("/api/v1/keys", json={"role": "consumer"}).json()["api_key"]
        fresh = http.post(
            "/v2/models/m/infer", json=BODY, headers={"Authorization": f"Bearer {other}"}
        )
        assert fresh.status_code == 200  # limits are per key


def test_key_and_tenant_daily_quotas(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", demo_models=False, key_daily_quota=2, tenant_daily_quota=3
    )
    services = build_services(settings)
    key = initialize(services).admin_key
    with TestClient(create_app(settings, services)) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        http.post("/api/v1/models/m/versions", content=scale_model())
        first = [http.post("/v2/models/m/infer", json=BODY).status_code for _ in range(3)]
        assert first == [200, 200, 429]
        other = http.post("/api/v1/keys", json={"role": "consumer"}).json()["api_key"]
        as_other = {"Authorization": f"Bearer {other}"}
        second = [
            http.post("/v2/models/m/infer", json=BODY, headers=as_other).status_code
            for _ in range(2)
        ]
        assert second == [200, 429]  # the tenant's third request of the day, then its limit
        refused = http.post("/v2/models/m/infer", json=BODY, headers=as_other)
        assert refused.json()["code"] == "quota_exceeded"
        assert "tenant" in refused.json()["detail"]


def test_grant_rate_limit(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", demo_models=False, grant_rate_per_second=1, rate_burst_seconds=2
    )
    services = build_services(settings)
    key = initialize(services).admin_key
    with TestClient(create_app(settings, services)) as http:
        http.headers["Authorization"] = f"Bearer {key}"
        http.post("/api/v1/models/fraud/versions", content=scale_model())
        lab2 = _lab(http)
        http.post("/api/v1/models/admin/fraud/grants", json={"tenant": "lab2"})
        url = "/v2/models/admin/fraud/infer"
        codes = [http.post(url, json=BODY, headers=lab2).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert http.post(url, json=BODY).status_code == 200  # the owner is not behind the grant

"""Health needs no key; everything else needs a valid, unrevoked, unexpired key."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.helpers.models import scale_model

PROBLEM = "application/problem+json"


def _anonymous(http: TestClient) -> dict[str, str]:
    return {"Authorization": ""}


def test_health_routes_need_no_key(http: TestClient) -> None:
    assert http.get("/v2/health/live", headers=_anonymous(http)).json() == {"live": True}
    ready = http.get("/v2/health/ready", headers=_anonymous(http))
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}


def test_server_metadata_names_binary_extension(http: TestClient) -> None:
    body = http.get("/v2").json()
    assert body["name"] == "openmaas"
    assert "binary_tensor_data" in body["extensions"]


def test_every_other_route_needs_a_key(http: TestClient) -> None:
    for method, path in [
        ("GET", "/v2"),
        ("GET", "/v2/models/admin/x"),
        ("POST", "/v2/models/admin/x/infer"),
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/tenants"),
    ]:
        response = http.request(method, path, headers=_anonymous(http))
        assert response.status_code == 401, path
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["code"] == "unauthenticated"


def test_mistyped_key_is_rejected_by_its_checksum(http: TestClient, admin_key: str) -> None:
    typo = admin_key[:20] + ("A" if admin_key[20] != "A" else "B") + admin_key[21:]
    response = http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {typo}"})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key_format"


def test_revocation_takes_effect_on_the_next_request(http: TestClient) -> None:
    created = http.post("/api/v1/keys", json={"role": "consumer", "name": "temp"}).json()
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    assert http.get("/api/v1/whoami", headers=headers).json()["role"] == "consumer"
    assert http.delete(f"/api/v1/keys/{created['key']['key_id']}").status_code == 200
    response = http.get("/api/v1/whoami", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_expired_key_is_rejected(http: TestClient) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    created = http.post("/api/v1/keys", json={"role": "viewer", "expires_at": soon.isoformat()})
    headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert http.get("/api/v1/whoami", headers=headers).status_code == 200  # now cached
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)
    response = http.get("/api/v1/whoami", headers=headers)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    past = http.post("/api/v1/keys", json={"role": "viewer", "expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 422
    assert past.json()["field"] == "expires_at"
    naive = http.post("/api/v1/keys", json={"role": "viewer", "expires_at": "2999-01-01T00:00"})
    assert naive.status_code == 201
    assert naive.json()["key"]["expires_at"].startswith("2999-01-01T00:00:00")


def test_foreign_private_model_looks_exactly_like_a_missing_one(http: TestClient) -> None:
    http.post("/api/v1/models/secret/versions", content=scale_model())
    lab = http.post("/api/v1/tenants", json={"name": "lab2"}).json()
    lab_headers = {"Authorization": f"Bearer {lab['api_key']}"}
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    for path in ["admin/secret", "admin/does-not-exist"]:
        infer = http.post(f"/v2/models/{path}/infer", json=body, headers=lab_headers)
        meta = http.get(f"/v2/models/{path}", headers=lab_headers)
        show = http.get(f"/api/v1/models/{path}", headers=lab_headers)
        for response in (infer, meta, show):
            assert response.status_code == 404
            assert response.json()["code"] == "model_not_found"
    models = http.get("/api/v1/models", headers=lab_headers).json()
    assert "admin/secret" not in [m["id"] for m in models]


def test_public_model_is_callable_by_every_tenant(http: TestClient) -> None:
    http.post("/api/v1/models/shared/versions?visibility=public", content=scale_model(3.0))
    lab = http.post("/api/v1/tenants", json={"name": "lab3"}).json()
    lab_headers = {"Authorization": f"Bearer {lab['api_key']}"}
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    response = http.post("/v2/models/admin/shared/infer", json=body, headers=lab_headers)
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [3.0, 6.0, 9.0, 12.0]
    # ... but only its own tenant may publish new versions of it.
    upload = http.post(
        "/api/v1/models/admin/shared/versions", content=scale_model(), headers=lab_headers
    )
    assert upload.status_code == 403


def test_roles_limit_what_a_key_may_do(http: TestClient) -> None:
    http.post("/api/v1/models/m/versions", content=scale_model())
    viewer = http.post("/api/v1/keys", json={"role": "viewer"}).json()["api_key"]
    consumer = http.post("/api/v1/keys", json={"role": "consumer"}).json()["api_key"]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    as_consumer = {"Authorization": f"Bearer {consumer}"}
    assert http.get("/api/v1/models/m", headers=as_viewer).status_code == 200
    denied = http.post("/v2/models/m/infer", json=body, headers=as_viewer)
    assert denied.status_code == 403
    assert denied.json()["code"] == "permission_denied"
    assert http.post("/v2/models/m/infer", json=body, headers=as_consumer).status_code == 200
    upload = http.post("/api/v1/models/m/versions", content=scale_model(), headers=as_consumer)
    assert upload.status_code == 403
    assert http.get("/api/v1/keys", headers=as_consumer).status_code == 403


def test_mass_assignment_is_refused(http: TestClient) -> None:
    response = http.post("/api/v1/keys", json={"role": "consumer", "tenant_id": 99})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "tenant_id" in response.json()["detail"]

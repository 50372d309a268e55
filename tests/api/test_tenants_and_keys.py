"""Tenants (platform admins only) and API keys of one's own tenant."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.helpers.models import scale_model


def test_platform_admin_creates_a_tenant_with_an_owner_key(http: TestClient) -> None:
    created = http.post("/api/v1/tenants", json={"name": "lab2"})
    assert created.status_code == 201
    body = created.json()
    assert body["tenant"]["name"] == "lab2"
    assert body["api_key"].startswith("om_")
    me = http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {body['api_key']}"})
    assert me.json()["tenant"] == "lab2"
    assert me.json()["role"] == "owner"
    names = [t["name"] for t in http.get("/api/v1/tenants").json()]
    assert names == ["admin", "lab2"]


def test_duplicate_or_invalid_tenant_names_are_refused(http: TestClient) -> None:
    assert http.post("/api/v1/tenants", json={"name": "lab2"}).status_code == 201
    duplicate = http.post("/api/v1/tenants", json={"name": "lab2"})
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "conflict"
    for bad in ["Lab", "a/b", "", "versions", "x" * 64]:
        response = http.post("/api/v1/tenants", json={"name": bad})
        assert response.status_code == 422, bad
        assert response.json()["field"] == "name"


def test_only_the_platform_tenant_creates_tenants(http: TestClient) -> None:
    lab = http.post("/api/v1/tenants", json={"name": "lab2"}).json()
    response = http.post(
        "/api/v1/tenants",
        json={"name": "lab3"},
        headers={"Authorization": f"Bearer {lab['api_key']}"},
    )
    assert response.status_code == 403
    listed = http.get("/api/v1/tenants", headers={"Authorization": f"Bearer {lab['api_key']}"})
    assert [t["name"] for t in listed.json()] == ["lab2"]


def test_keys_are_listed_without_secrets_and_scoped_to_the_tenant(http: TestClient) -> None:
    created = http.post("/api/v1/keys", json={"role": "publisher", "name": "ci"}).json()
    assert created["key"]["scopes"] == ["infer", "models:read", "models:write"]
    listing = http.get("/api/v1/keys")
    assert created["api_key"] not in listing.text
    assert "ci" in [k["name"] for k in listing.json()]
    lab = http.post("/api/v1/tenants", json={"name": "lab2"}).json()
    lab_headers = {"Authorization": f"Bearer {lab['api_key']}"}
    lab_keys = [k["key_id"] for k in http.get("/api/v1/keys", headers=lab_headers).json()]
    assert created["key"]["key_id"] not in lab_keys
    foreign_revoke = http.delete(f"/api/v1/keys/{created['key']['key_id']}", headers=lab_headers)
    assert foreign_revoke.status_code == 404
    assert foreign_revoke.json()["code"] == "api_key_not_found"


def test_a_key_cannot_mint_a_more_powerful_key(http: TestClient) -> None:
    admin_key = http.post("/api/v1/keys", json={"role": "admin"}).json()["api_key"]
    response = http.post(
        "/api/v1/keys", json={"role": "owner"}, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert response.status_code == 403
    unknown_role = http.post("/api/v1/keys", json={"role": "superuser"})
    assert unknown_role.status_code == 422
    assert unknown_role.json()["field"] == "role"


def test_key_scopes_narrow_the_role(http: TestClient) -> None:
    created = http.post("/api/v1/keys", json={"role": "consumer", "scopes": ["models:read"]})
    assert created.status_code == 201
    headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert http.get("/api/v1/models", headers=headers).status_code == 200
    http.post("/api/v1/models/scaler/versions", content=scale_model())
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert http.post("/v2/models/scaler/infer", json=body, headers=headers).status_code == 403
    assert http.post("/v2/models/scaler/infer", json=body).status_code == 200
    too_wide = http.post("/api/v1/keys", json={"role": "viewer", "scopes": ["infer"]})
    assert too_wide.status_code == 422

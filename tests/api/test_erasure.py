"""Erasure with signed receipts, the canary test, audit records, rotation and members."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi.testclient import TestClient

from openmaas.bootstrap import Services
from tests.helpers.models import scale_model

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
CANARY = b"CANARY-7f3a9c1e5b"


def _canary_model() -> bytes:
    """A working model whose bytes carry the canary (in the ONNX doc string)."""
    import onnx

    model = onnx.load_model_from_string(scale_model())
    model.doc_string = CANARY.decode() * 4
    return model.SerializeToString()


def _files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def test_erasing_a_tenant_leaves_no_canary_anywhere(
    http: TestClient, services: Services, tmp_path: Path
) -> None:
    lab = http.post("/api/v1/tenants", json={"name": "lab2"}).json()
    as_lab = {"Authorization": f"Bearer {lab['api_key']}"}
    description = CANARY.decode() + " model card"
    published = http.post(
        "/api/v1/models/fraud/versions",
        params={"description": description},
        content=_canary_model(),
        headers=as_lab,
    )
    assert published.status_code == 201
    made = http.post(
        "/api/v1/keys", json={"role": "consumer", "name": CANARY.decode()}, headers=as_lab
    )
    assert made.status_code == 201
    assert http.post("/v2/models/lab2/fraud/infer", json=BODY, headers=as_lab).status_code == 200
    data_dir = services.settings.data_dir
    # Before erasure the canary is in the database (card, key name) but never in a blob.
    blobs = _files_under(data_dir / "blobs")
    assert blobs
    assert not any(CANARY in p.read_bytes() for p in blobs)
    assert any(CANARY in p.read_bytes() for p in _files_under(data_dir))  # card and key name

    erased = http.post("/api/v1/erasures", json={"tenant": "lab2"})
    assert erased.status_code == 201, erased.text
    receipt = erased.json()
    assert receipt["kind"] == "tenant"
    assert receipt["counts"] == {"models": 1, "versions": 1, "keys": 2, "members": 0}
    assert receipt["signature"]

    # Logically effective at once: the tenant's keys and models are gone.
    assert http.get("/api/v1/whoami", headers=as_lab).status_code == 401
    assert http.get("/v2/models/lab2/fraud").status_code == 404
    # Physically: no canary byte in the database, its WAL, the blobs, or temp files.
    leftovers = [
        p
        for p in _files_under(data_dir, Path(os.environ.get("TMPDIR", "/tmp")) / "openmaas")
        if CANARY in p.read_bytes()
    ]
    assert leftovers == []
    verified = http.get(f"/api/v1/erasures/{receipt['receipt_id']}").json()
    assert verified["ok"], verified["checks"]
    assert {c["check"] for c in verified["checks"]} >= {
        "receipt signature",
        "audit chain intact",
        "keys destroyed",
    }


def test_erasing_a_version_moves_latest_and_keeps_the_rest(http: TestClient) -> None:
    http.post("/api/v1/models/fraud/versions", content=scale_model(2.0))
    http.post("/api/v1/models/fraud/versions", content=scale_model(3.0))
    assert http.post("/v2/models/fraud/infer", json=BODY).json()["model_version"] == "2"
    erased = http.post("/api/v1/erasures", json={"model": "admin/fraud", "version": 2})
    assert erased.status_code == 201
    answer = http.post("/v2/models/fraud/infer", json=BODY).json()  # at once, despite caches
    assert answer["model_version"] == "1"
    assert answer["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
    assert http.post("/v2/models/fraud/versions/2/infer", json=BODY).status_code == 404
    model = http.post("/api/v1/erasures", json={"model": "admin/fraud"})
    assert model.json()["counts"] == {"versions": 1}
    assert http.get("/api/v1/models/admin/fraud").status_code == 404


def test_erasure_rights_and_bad_requests(http: TestClient) -> None:
    http.post("/api/v1/models/fraud/versions", content=scale_model())
    lab = http.post("/api/v1/tenants", json={"name": "lab2"}).json()
    as_lab = {"Authorization": f"Bearer {lab['api_key']}"}
    foreign = http.post("/api/v1/erasures", json={"model": "admin/fraud"}, headers=as_lab)
    assert foreign.status_code == 404
    tenant = http.post("/api/v1/erasures", json={"tenant": "admin"}, headers=as_lab)
    assert tenant.status_code == 403
    platform = http.post("/api/v1/erasures", json={"tenant": "admin"})
    assert platform.status_code == 403
    for body in [{}, {"tenant": "lab2", "model": "admin/fraud"}, {"api_key": "x", "version": 1}]:
        assert http.post("/api/v1/erasures", json=body).status_code == 422, body
    assert http.get("/v2/models/admin/fraud").status_code == 200


def test_erasing_a_member_removes_their_keys(http: TestClient) -> None:
    added = http.post("/api/v1/members", json={"name": "ada", "role": "publisher"})
    assert added.status_code == 201
    key = http.post("/api/v1/keys", json={"role": "publisher", "member": "ada"}).json()
    headers = {"Authorization": f"Bearer {key['api_key']}"}
    assert http.get("/api/v1/whoami", headers=headers).status_code == 200
    receipt = http.post("/api/v1/erasures", json={"member": "ada"}).json()
    assert receipt["counts"] == {"members": 1, "keys": 1}
    assert http.get("/api/v1/whoami", headers=headers).status_code == 401
    assert http.get("/api/v1/members").json() == []
    unknown = http.post("/api/v1/keys", json={"role": "viewer", "member": "nobody"})
    assert unknown.status_code == 422


def test_erasing_a_key_deletes_it(http: TestClient) -> None:
    key = http.post("/api/v1/keys", json={"role": "viewer", "name": "temp"}).json()
    receipt = http.post("/api/v1/erasures", json={"api_key": key["key"]["key_id"]}).json()
    assert receipt["kind"] == "api_key"
    ids = [k["key_id"] for k in http.get("/api/v1/keys").json()]
    assert key["key"]["key_id"] not in ids
    headers = {"Authorization": f"Bearer {key['api_key']}"}
    assert http.get("/api/v1/whoami", headers=headers).status_code == 401


def test_audit_records_actions_without_secrets_and_verifies(http: TestClient) -> None:
    http.post("/api/v1/models/fraud/versions", content=scale_model())
    created = http.post("/api/v1/keys", json={"role": "consumer", "name": "n"}).json()
    http.delete(f"/api/v1/keys/{created['key']['key_id']}")
    http.post("/api/v1/tenants", json={"name": "lab2"})
    records = http.get("/api/v1/audit").json()
    actions = [r["action"] for r in records]
    for expected in ["model.publish", "key.create", "key.revoke", "tenant.create"]:
        assert expected in actions
    assert created["api_key"] not in str(records)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    report = http.get("/api/v1/audit/verify").json()
    assert report["ok"] is True
    assert report["records"] == len(records)


def test_key_rotation_keeps_the_old_key_for_the_overlap(http: TestClient) -> None:
    old = http.post("/api/v1/keys", json={"role": "consumer"}).json()
    old_headers = {"Authorization": f"Bearer {old['api_key']}"}
    rotated = http.post(
        f"/api/v1/keys/{old['key']['key_id']}/rotate",
        json={"overlap_seconds": 3600},
        headers=old_headers,  # a key may rotate itself
    )
    assert rotated.status_code == 201
    new_headers = {"Authorization": f"Bearer {rotated.json()['api_key']}"}
    assert http.get("/api/v1/whoami", headers=new_headers).json()["role"] == "consumer"
    assert http.get("/api/v1/whoami", headers=old_headers).status_code == 200  # overlap
    immediate = http.post(
        f"/api/v1/keys/{rotated.json()['key']['key_id']}/rotate", json={"overlap_seconds": 0}
    )
    assert immediate.status_code == 201
    assert http.get("/api/v1/whoami", headers=new_headers).status_code == 401


def test_denied_access_is_audited_without_the_key(http: TestClient, admin_key: str) -> None:
    viewer = http.post("/api/v1/keys", json={"role": "viewer"}).json()
    forged = admin_key[:16] + "x" * (len(admin_key) - 16)
    assert (
        http.get("/api/v1/keys", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    )
    as_viewer = {"Authorization": f"Bearer {viewer['api_key']}"}
    assert http.get("/api/v1/keys", headers=as_viewer).status_code == 403
    denied = [r for r in http.get("/api/v1/audit").json() if r["action"] == "access.denied"]
    assert {r["details"]["code"] for r in denied} == {"invalid_api_key_format", "permission_denied"}
    assert viewer["key"]["key_id"] in {r["actor_key_id"] for r in denied}
    assert forged not in str(denied)
    assert viewer["api_key"] not in str(denied)


def test_key_use_is_audited_once_as_a_login(http: TestClient) -> None:
    made = http.post("/api/v1/keys", json={"role": "viewer"}).json()
    headers = {"Authorization": f"Bearer {made['api_key']}"}
    for _ in range(3):
        assert http.get("/api/v1/whoami", headers=headers).status_code == 200
    target = f"api key {made['key']['key_id']}"
    deadline = time.monotonic() + 10
    logins: list[dict[str, object]] = []
    while time.monotonic() < deadline and not logins:
        records = http.get("/api/v1/audit", params={"limit": 1000}).json()
        logins = [r for r in records if r["action"] == "key.login" and r["target"] == target]
        time.sleep(0.05)
    assert len(logins) == 1  # written off the request path, once an hour per key

"""The OWASP API Security Top 10 (2023), one test per item, as each applies to OpenMaaS.

Each test's docstring says what the item means here and what the test proves. The platform
tenant is ``admin`` (the ``http`` fixture's default key is its owner key); other tenants are
made with ``POST /api/v1/tenants``.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import math
import pickle
import re
import string
import threading
import zipfile
import zlib
from collections.abc import Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import onnx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from onnx import TensorProto
from sqlalchemy import select

from openmaas._version import __version__
from openmaas.app import create_app
from openmaas.bootstrap import Services, build_services, initialize
from openmaas.security.keys import generate_api_key, parse_api_key
from openmaas.settings import Settings
from openmaas.store.tables import ApiKey
from tests.helpers.models import identity_model, scale_model

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
PROBLEM = "application/problem+json"
TOKEN = re.compile(r"om_[0-9a-z]{12}_[0-9A-Za-z]{49}")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
DOCS_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
HEALTH_ROUTES = {"/v2/health/live", "/v2/health/ready"}


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tenant(http: TestClient, name: str) -> str:
    """Create a tenant (as the platform) and return its owner key."""
    created = http.post("/api/v1/tenants", json={"name": name})
    assert created.status_code == 201, created.text
    key: str = created.json()["api_key"]
    return key


def _key(http: TestClient, role: str, headers: dict[str, str] | None = None, **extra: Any) -> Any:
    """Create a key of ``role`` in the caller's tenant; its creation answer."""
    created = http.post("/api/v1/keys", json={"role": role, **extra}, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()


def _anonymous(http: TestClient) -> TestClient:
    """A client of the same (started) app that sends no Authorization header at all."""
    return TestClient(http.app)


def test_api1_broken_object_level_authorization(http: TestClient) -> None:
    """API1:2023 Broken Object Level Authorization.

    Here: every object id a client can name (a model ``tenant/name``, an API key id, a grant,
    a member, an erasure receipt id) belongs to one tenant, and a key of another tenant must
    not read, change or even detect it. Proves that an owner key of another tenant (every
    right, in its own tenant) gets 404 for each operation on each kind of foreign object, sees
    none of them in any listing, leaves them intact; and that a tenant created under the name
    of an erased one inherits none of the erased tenant's audit records or receipts.
    """
    # The victim: the platform tenant's private model shared with lab3, a key, a member and
    # an erasure receipt.
    assert http.post("/api/v1/models/secret/versions", content=scale_model()).status_code == 201
    _tenant(http, "lab3")
    assert http.post("/api/v1/models/admin/secret/grants", json={"tenant": "lab3"}).is_success
    victim = _key(http, "consumer", name="victim")
    key_id = victim["key"]["key_id"]
    assert http.post("/api/v1/members", json={"name": "ada", "role": "viewer"}).is_success
    spare = _key(http, "viewer")["key"]["key_id"]
    receipt = http.post("/api/v1/erasures", json={"api_key": spare}).json()["receipt_id"]
    # A tenant that is erased, and a new one that is given the same name.
    old = _as(_tenant(http, "lab4"))
    http.post("/api/v1/models/plan-b/versions", content=scale_model(), headers=old)
    old_spare = _key(http, "viewer", old)["key"]["key_id"]
    old_receipt = http.post("/api/v1/erasures", json={"api_key": old_spare}, headers=old)
    assert http.post("/api/v1/erasures", json={"tenant": "lab4"}).status_code == 201
    reborn_token = _tenant(http, "lab4")
    reborn = _as(reborn_token)
    reborn_key = parse_api_key(reborn_token).key_id
    # The reborn tenant may see its own key's login (written in the background), nothing else.
    reborn_audit = [
        record
        for record in http.get("/api/v1/audit", headers=reborn).json()
        if record["target"] != f"api key {reborn_key}"
    ]
    reborn_receipt = http.get(
        f"/api/v1/erasures/{old_receipt.json()['receipt_id']}", headers=reborn
    )

    attacker = _as(_tenant(http, "lab2"))
    model = "admin/secret"
    probes: dict[str, tuple[str, str, dict[str, Any]]] = {
        "model show": ("GET", f"/api/v1/models/{model}", {}),
        "model metadata": ("GET", f"/v2/models/{model}", {}),
        "model ready": ("GET", f"/v2/models/{model}/ready", {}),
        "infer": ("POST", f"/v2/models/{model}/infer", {"json": BODY}),
        "publish": ("POST", f"/api/v1/models/{model}/versions", {"content": scale_model()}),
        "update": ("PATCH", f"/api/v1/models/{model}", {"json": {"visibility": "public"}}),
        "alias": ("PUT", f"/api/v1/models/{model}/aliases/prod", {"json": {"version": 1}}),
        "grants list": ("GET", f"/api/v1/models/{model}/grants", {}),
        "grant to self": ("POST", f"/api/v1/models/{model}/grants", {"json": {"tenant": "lab2"}}),
        "grant delete": ("DELETE", f"/api/v1/models/{model}/grants/lab3", {}),
        "erase model": ("POST", "/api/v1/erasures", {"json": {"model": model}}),
        "erase version": ("POST", "/api/v1/erasures", {"json": {"model": model, "version": 1}}),
        "key revoke": ("DELETE", f"/api/v1/keys/{key_id}", {}),
        "key rotate": ("POST", f"/api/v1/keys/{key_id}/rotate", {"json": {}}),
        "erase key": ("POST", "/api/v1/erasures", {"json": {"api_key": key_id}}),
        "erase member": ("POST", "/api/v1/erasures", {"json": {"member": "ada"}}),
        "receipt": ("GET", f"/api/v1/erasures/{receipt}", {}),
    }
    observed: dict[str, Any] = {
        name: http.request(method, path, headers=attacker, **kwargs).status_code
        for name, (method, path, kwargs) in probes.items()
    }
    listed = {
        path: http.get(path, headers=attacker).json()
        for path in ("/api/v1/models", "/api/v1/keys", "/api/v1/members", "/api/v1/tenants")
    }
    observed |= {
        "listed foreign models": [
            m["id"] for m in listed["/api/v1/models"] if m["tenant"] != "lab2"
        ],
        "listed foreign keys": [
            k["key_id"] for k in listed["/api/v1/keys"] if k["tenant"] != "lab2"
        ],
        "listed members": [m["name"] for m in listed["/api/v1/members"]],
        "listed tenants": [t["name"] for t in listed["/api/v1/tenants"]],
        "audit of other tenants": sorted(
            {r["actor_tenant"] for r in http.get("/api/v1/audit", headers=attacker).json()}
            - {"lab2"}
        ),
        "erased tenant's audit seen by its namesake": [r["target"] for r in reborn_audit],
        "erased tenant's receipt seen by its namesake": reborn_receipt.status_code,
    }
    assert observed == {
        **dict.fromkeys(probes, 404),
        "listed foreign models": [],
        "listed foreign keys": [],
        "listed members": [],
        "listed tenants": ["lab2"],
        "audit of other tenants": [],
        "erased tenant's audit seen by its namesake": [],
        "erased tenant's receipt seen by its namesake": 404,
    }
    # ... and the victim's objects are untouched.
    assert http.get("/api/v1/whoami", headers=_as(victim["api_key"])).status_code == 200
    grants = http.get(f"/api/v1/models/{model}/grants").json()
    assert [g["tenant"] for g in grants] == ["lab3"]
    detail = http.get(f"/api/v1/models/{model}").json()
    assert (detail["summary"]["visibility"], len(detail["versions"])) == ("private", 1)
    assert [m["name"] for m in http.get("/api/v1/members").json()] == ["ada"]


def _checksummed(body: str) -> str:
    """``body`` plus its public checksum (CRC32 in base62): anyone can compute it."""
    alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase
    value, digits = zlib.crc32(body.encode()), []
    for _ in range(6):
        value, rest = divmod(value, 62)
        digits.append(alphabet[rest])
    return body + "".join(reversed(digits))


def test_api2_broken_authentication(http: TestClient) -> None:
    """API2:2023 Broken Authentication.

    Here: an API key (``Authorization: Bearer om_...``) is the only credential; it must be
    valid, unrevoked, unexpired and not erased, presented in that header and nowhere else, and
    its secret must never come back from the server. Proves that a missing, empty,
    wrong-scheme, mistyped, truncated, forged (right key id and checksum, wrong secret),
    unknown, revoked, expired or erased key, or one sent in the query string or a cookie, gets
    401 problem+json with ``WWW-Authenticate: Bearer``; that a forged secret and an unknown key
    id get the same answer (no key id enumeration); and that no response, error or listing
    ever contains a key's secret.
    """
    good = _key(http, "consumer", name="api2")
    token, key_id = good["api_key"], good["key"]["key_id"]
    secret = parse_api_key(token).secret
    revoked = _key(http, "consumer")
    assert http.delete(f"/api/v1/keys/{revoked['key']['key_id']}").status_code == 200
    expired = _key(http, "consumer")
    rotated = http.post(
        f"/api/v1/keys/{expired['key']['key_id']}/rotate", json={"overlap_seconds": 0}
    )
    assert rotated.status_code == 201  # the old key expires at once
    erased = _key(http, "consumer")
    assert http.post("/api/v1/erasures", json={"api_key": erased["key"]["key_id"]}).is_success
    forged = _checksummed(f"om_{key_id}_{'A' * len(secret)}")
    assert parse_api_key(forged).key_id == key_id  # well formed: only the secret is wrong
    typo = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    basic = base64.b64encode(f"{key_id}:{token}".encode()).decode()
    anonymous = _anonymous(http)
    attempts = {
        "no header": anonymous.get("/api/v1/whoami"),
        "empty bearer": anonymous.get("/api/v1/whoami", headers={"Authorization": "Bearer "}),
        "basic scheme": anonymous.get(
            "/api/v1/whoami", headers={"Authorization": f"Basic {basic}"}
        ),
        "no scheme": anonymous.get("/api/v1/whoami", headers={"Authorization": token}),
        "other scheme": anonymous.get(
            "/api/v1/whoami", headers={"Authorization": f"Token {token}"}
        ),
        "query string": anonymous.get("/api/v1/whoami", params={"api_key": token}),
        "cookie": anonymous.get("/api/v1/whoami", headers={"Cookie": f"api_key={token}"}),
        "mistyped": anonymous.get("/api/v1/whoami", headers=_as(typo)),
        "truncated": anonymous.get("/api/v1/whoami", headers=_as(token[:-1])),
        "forged secret": anonymous.get("/api/v1/whoami", headers=_as(forged)),
        "unknown key": anonymous.get("/api/v1/whoami", headers=_as(generate_api_key()[0])),
        "revoked": anonymous.get("/api/v1/whoami", headers=_as(revoked["api_key"])),
        "expired": anonymous.get("/api/v1/whoami", headers=_as(expired["api_key"])),
        "erased": anonymous.get("/api/v1/whoami", headers=_as(erased["api_key"])),
    }
    for name, response in attempts.items():
        assert response.status_code == 401, (name, response.text)
        assert response.headers["content-type"] == PROBLEM, name
        assert response.headers["www-authenticate"] == "Bearer", name
        assert response.json()["code"] in ("unauthenticated", "invalid_api_key_format"), name
    assert attempts["forged secret"].json() == attempts["unknown key"].json()
    me = http.get("/api/v1/whoami", headers=_as(token))
    assert (me.status_code, me.json()["role"]) == (200, "consumer")  # the real key works
    # No secret in any answer: errors, listings, the audit log, the caller's own whoami.
    secrets = {token, secret, parse_api_key(forged).secret}
    secrets |= {revoked["api_key"], expired["api_key"], erased["api_key"]}
    answers = [
        *attempts.values(),
        me,
        http.get("/api/v1/keys"),
        http.get("/api/v1/audit", params={"limit": 1000}),
        rotated,
    ]
    for response in answers:
        seen = response.text + json.dumps(dict(response.headers))
        assert not [s for s in secrets if s in seen], response.request.url
    assert not TOKEN.search(rotated.text.replace(rotated.json()["api_key"], ""))


def test_api3_broken_object_property_level_authorization(
    http: TestClient, services: Services
) -> None:
    """API3:2023 Broken Object Property Level Authorization.

    Here: a client must not set properties it does not own (mass assignment of ``tenant_id``,
    ``owner``, ``role``, ``is_platform``, ``secret_hash``, ``key_id`` ...), and the server must
    not send properties a client must not see (a key's ``secret_hash`` or secret). Proves that
    every management body refuses such extra fields with 422 and changes nothing, that a
    ``tenant`` query parameter cannot publish into another tenant, and that no answer carries
    ``secret_hash``, any stored key hash, or a key token other than a new key's own.
    """
    lab = _as(_tenant(http, "lab2"))
    http.post("/api/v1/models/m/versions", content=scale_model())
    key_id = _key(http, "viewer")["key"]["key_id"]
    before = {path: http.get(path).json() for path in ("/api/v1/keys", "/api/v1/tenants")}
    attempts = [
        ("POST", "/api/v1/keys", {"role": "viewer", "tenant_id": 2}),
        ("POST", "/api/v1/keys", {"role": "viewer", "tenant": "lab2"}),
        ("POST", "/api/v1/keys", {"role": "viewer", "is_platform": True}),
        ("POST", "/api/v1/keys", {"role": "viewer", "key_id": "aaaaaaaaaaaa"}),
        ("POST", "/api/v1/keys", {"role": "viewer", "secret_hash": "0" * 64}),
        ("POST", "/api/v1/keys", {"role": "viewer", "revoked_at": None}),
        ("POST", "/api/v1/tenants", {"name": "lab9", "is_platform": True}),
        ("POST", "/api/v1/tenants", {"name": "lab9", "owner": "admin"}),
        ("PATCH", "/api/v1/models/admin/m", {"tenant": "lab2"}),
        ("PATCH", "/api/v1/models/admin/m", {"owner": "lab2"}),
        ("PATCH", "/api/v1/models/admin/m", {"name": "renamed", "id": 1}),
        ("PUT", "/api/v1/models/admin/m/aliases/prod", {"version": 1, "model_id": 2}),
        ("POST", "/api/v1/models/admin/m/grants", {"tenant": "lab2", "model_id": 2}),
        ("POST", "/api/v1/members", {"name": "eve", "tenant_id": 2}),
        ("POST", f"/api/v1/keys/{key_id}/rotate", {"role": "owner"}),
        ("POST", f"/api/v1/keys/{key_id}/rotate", {"scopes": ["admin"]}),
        ("POST", "/api/v1/erasures", {"api_key": key_id, "tenant_id": 2}),
    ]
    for method, path, body in attempts:
        response = http.request(method, path, json=body)
        assert response.status_code == 422, (method, path, body, response.text)
        assert response.json()["code"] == "validation_error"
    assert {path: http.get(path).json() for path in before} == before
    assert http.get("/api/v1/models/admin/m/grants").json() == []
    assert http.get("/api/v1/members").json() == []
    # Query parameters cannot move an upload into another tenant either.
    upload = http.post(
        "/api/v1/models/m2/versions",
        params={"tenant": "admin", "owner": "admin", "tenant_id": 1},
        content=scale_model(),
        headers=lab,
    )
    assert upload.json()["model"] == "lab2/m2"
    assert http.get("/api/v1/models/admin/m2").status_code == 404

    # What the server sends: never a stored hash, never a secret but a new key's own.
    created = _key(http, "publisher", name="ci")
    answers = [
        http.get(path)
        for path in (
            "/api/v1/whoami",
            "/api/v1/keys",
            "/api/v1/tenants",
            "/api/v1/members",
            "/api/v1/models",
            "/api/v1/models/admin/m",
            "/api/v1/audit?limit=1000",
        )
    ]
    with services.db.session() as session:
        hashes = set(session.scalars(select(ApiKey.secret_hash)).all())
    assert hashes
    for response in answers:
        assert response.status_code == 200, response.request.url
        assert "secret_hash" not in response.text, response.request.url
        assert not TOKEN.search(response.text), response.request.url
        assert not [h for h in hashes if h in response.text or h[:16] in response.text]
    assert "secret_hash" not in json.dumps(created)
    assert set(created["key"]) == {
        "key_id",
        "tenant",
        "name",
        "role",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
    }


def test_api4_unrestricted_resource_consumption(tmp_path: Path) -> None:
    """API4:2023 Unrestricted Resource Consumption.

    Here: request bodies, artifact uploads, compressed bodies, JSON nesting, tensor sizes,
    request rates per key, calls through a grant, and page sizes are all bounded by settings,
    and each bound answers before the work is done. Proves 413 for a body, an upload and a
    gzip bomb over their limits (also without Content-Length), 400 ``json_too_deep``, 422
    ``tensor_too_large`` (even for an absurd declared shape), 429 ``rate_limited`` and 429
    ``quota_exceeded`` each with ``Retry-After``, 422 for an oversized page of audit records,
    and that the server still answers afterwards.
    """
    settings = Settings(
        data_dir=tmp_path / "data",
        demo_models=False,
        inference_threads=1,
        max_request_bytes=4096,
        max_artifact_bytes=2048,
        max_tensor_elements=8,
        max_json_depth=8,
        key_rate_per_second=1,
        rate_burst_seconds=2,
    )
    services = build_services(settings)
    admin_key = initialize(services).admin_key
    assert admin_key is not None
    with TestClient(create_app(settings, services), headers=_as(admin_key)) as http:
        assert http.post("/api/v1/models/m/versions", content=scale_model()).status_code == 201
        infer = "/v2/models/admin/m/infer"

        def chunks() -> Iterator[bytes]:
            for _ in range(8):
                yield b" " * 1024

        too_large = {
            "body": http.post(
                infer, content=b" " * 5000, headers={"content-type": "application/json"}
            ),
            "streamed body": http.post(infer, content=chunks()),
            "upload": http.post("/api/v1/models/big/versions", content=b"x" * 4096),
            "gzip bomb": http.post(
                infer,
                content=gzip.compress(b" " * 1_000_000),
                headers={"content-encoding": "gzip", "content-type": "application/json"},
            ),
        }
        for name, response in too_large.items():
            assert response.status_code == 413, (name, response.text)
            assert response.json()["code"] == "payload_too_large", name
        deep = json.dumps({"inputs": [[[[[[[[[[1]]]]]]]]]]})
        for path in (infer, "/api/v1/keys"):
            nested = http.post(path, content=deep, headers={"content-type": "application/json"})
            assert nested.status_code == 400, path
            assert nested.json()["code"] == "json_too_deep"
        for shape in ([3, 4], [2**62, 2**62]):
            tensor = {"name": "x", "datatype": "FP32", "shape": shape, "data": [1] * 12}
            refused = http.post(infer, json={"inputs": [tensor]})
            assert refused.status_code == 422, shape
            assert refused.json()["code"] == "tensor_too_large"
        assert http.get("/api/v1/audit", params={"limit": 100_000}).status_code == 422

        consumer = _as(_key(http, "consumer")["api_key"])
        codes = [http.post(infer, json=BODY, headers=consumer).status_code for _ in range(4)]
        assert codes[:2] == [200, 200]
        limited = http.post(infer, json=BODY, headers=consumer)
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1

        lab = _as(_tenant(http, "lab2"))
        shared = http.post(
            "/api/v1/models/admin/m/grants", json={"tenant": "lab2", "quota_per_day": 1}
        )
        assert shared.status_code == 201
        assert http.post(infer, json=BODY, headers=lab).status_code == 200
        over = http.post(infer, json=BODY, headers=lab)
        assert over.status_code == 429
        assert over.json()["code"] == "quota_exceeded"
        assert 0 < int(over.headers["retry-after"]) <= 86400
        assert http.get("/v2/health/live").status_code == 200


def test_api5_broken_function_level_authorization(http: TestClient) -> None:
    """API5:2023 Broken Function Level Authorization.

    Here: which functions a key may call is the policy table (role x action) plus the rule
    that platform administration needs a key of the platform tenant. Proves, for a sample of
    each boundary (the full matrix is tests/api/test_policy_matrix.py), that a consumer cannot
    publish, change or share a model, a viewer cannot infer, a publisher cannot manage keys,
    members or read the audit log, an owner of another tenant cannot create tenants, verify
    the audit chain or erase a tenant, a platform consumer cannot create tenants, and that
    other HTTP methods or a method-override header reach no function.
    """
    http.post("/api/v1/models/m/versions", content=scale_model())
    consumer = _as(_key(http, "consumer")["api_key"])
    viewer = _as(_key(http, "viewer")["api_key"])
    publisher = _as(_key(http, "publisher")["api_key"])
    owner = _as(_tenant(http, "lab2"))
    _tenant(http, "lab3")
    denied = [
        (consumer, "POST", "/api/v1/models/m/versions", {"content": scale_model()}),
        (consumer, "PATCH", "/api/v1/models/admin/m", {"json": {"visibility": "public"}}),
        (consumer, "POST", "/api/v1/models/admin/m/grants", {"json": {"tenant": "lab2"}}),
        (viewer, "POST", "/v2/models/admin/m/infer", {"json": BODY}),
        (publisher, "POST", "/api/v1/keys", {"json": {"role": "viewer"}}),
        (publisher, "GET", "/api/v1/keys", {}),
        (publisher, "POST", "/api/v1/members", {"json": {"name": "x", "role": "viewer"}}),
        (publisher, "GET", "/api/v1/audit", {}),
        (owner, "POST", "/api/v1/tenants", {"json": {"name": "lab9"}}),
        (owner, "GET", "/api/v1/audit/verify", {}),
        (owner, "POST", "/api/v1/erasures", {"json": {"tenant": "lab3"}}),
        (consumer, "POST", "/api/v1/tenants", {"json": {"name": "lab9"}}),  # a platform key
    ]
    for headers, method, path, kwargs in denied:
        response = http.request(method, path, headers=headers, **kwargs)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "permission_denied"
    names = [t["name"] for t in http.get("/api/v1/tenants").json()]
    assert names == ["admin", "lab2", "lab3"]
    assert [t["name"] for t in http.get("/api/v1/tenants", headers=owner).json()] == ["lab2"]
    # Other methods are not other functions: 405, and no override header changes the method.
    for method, path in [("DELETE", "/api/v1/tenants"), ("PUT", "/api/v1/keys")]:
        assert http.request(method, path).status_code == 405, (method, path)
    target = _key(http, "viewer")
    override = http.get(
        "/api/v1/models/admin/m?_method=DELETE",
        headers={**viewer, "X-HTTP-Method-Override": "PATCH"},
    )
    assert override.status_code == 200
    revoke = http.post(
        f"/api/v1/keys/{target['key']['key_id']}", headers={"X-HTTP-Method-Override": "DELETE"}
    )
    assert revoke.status_code == 405
    assert http.get("/api/v1/whoami", headers=_as(target["api_key"])).status_code == 200


def test_api6_unrestricted_access_to_sensitive_business_flows(http: TestClient) -> None:
    """API6:2023 Unrestricted Access to Sensitive Business Flows.

    Here: the sensitive flows are making tenants (each comes with an owner key), erasing them,
    and minting keys and members (each a new credential or identity). Proves that only an
    owner or admin key of the platform tenant creates or erases tenants, that the platform
    tenant itself cannot be erased, that an erased tenant's keys stop at once, and that no
    key can mint a more powerful key or member: not a higher role, not a scope it lacks
    itself, not by rotating itself.
    """
    lab = _as(_tenant(http, "lab2"))
    platform_admin = _as(_key(http, "admin")["api_key"])
    platform_publisher = _as(_key(http, "publisher")["api_key"])
    for headers in (lab, platform_publisher):
        assert (
            http.post("/api/v1/tenants", json={"name": "lab9"}, headers=headers).status_code == 403
        )
    lab3 = _tenant(http, "lab3")
    assert http.post("/api/v1/erasures", json={"tenant": "lab3"}, headers=lab).status_code == 403
    refused = http.post("/api/v1/erasures", json={"tenant": "lab3"}, headers=platform_publisher)
    assert refused.status_code == 403
    assert http.get("/api/v1/whoami", headers=_as(lab3)).status_code == 200
    assert http.post("/api/v1/erasures", json={"tenant": "admin"}).status_code == 403
    assert (
        http.post("/api/v1/tenants", json={"name": "lab5"}, headers=platform_admin).status_code
        == 201
    )
    erased = http.post("/api/v1/erasures", json={"tenant": "lab3"}, headers=platform_admin)
    assert erased.status_code == 201
    assert http.get("/api/v1/whoami", headers=_as(lab3)).status_code == 401

    # Keys and members: never more than the caller has.
    lab_admin = _as(_key(http, "admin", lab)["api_key"])
    assert http.post("/api/v1/keys", json={"role": "owner"}, headers=lab_admin).status_code == 403
    made = http.post("/api/v1/members", json={"name": "boss", "role": "owner"}, headers=lab_admin)
    assert made.status_code in (403, 422)
    assert http.get("/api/v1/members", headers=lab).json() == []
    narrow = _as(_key(http, "admin", lab, scopes=["keys", "models:read"])["api_key"])
    wider = http.post(
        "/api/v1/keys", json={"role": "publisher", "scopes": ["models:write"]}, headers=narrow
    )
    assert wider.status_code == 403
    default = _key(http, "publisher", narrow)  # defaults are capped by the caller's scopes
    assert default["key"]["scopes"] == ["models:read"]
    consumer = _key(http, "consumer", lab)
    rotated = http.post(
        f"/api/v1/keys/{consumer['key']['key_id']}/rotate",
        json={"overlap_seconds": 0},
        headers=_as(consumer["api_key"]),
    )
    assert rotated.status_code == 201
    assert (rotated.json()["key"]["role"], rotated.json()["key"]["scopes"]) == (
        "consumer",
        consumer["key"]["scopes"],
    )
    rotated_key = _as(rotated.json()["api_key"])
    assert (
        http.post("/api/v1/keys", json={"role": "viewer"}, headers=rotated_key).status_code == 403
    )


class _Recorder(BaseHTTPRequestHandler):
    """Records every request it gets, whatever its method (the server should send none)."""

    hits: list[str]

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.hits.append(f"{self.command} {self.path}")
        return parsed

    def do_GET(self) -> None:  # serves a valid model, to make a fetch worth its while
        self.send_response(200)
        self.end_headers()
        self.wfile.write(scale_model())

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A tiny HTTP server on 127.0.0.1 that serves a valid model and records each request."""
    hits: list[str] = []
    handler = type("Handler", (_Recorder,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_api7_server_side_request_forgery(
    http: TestClient, listener: tuple[str, list[str]]
) -> None:
    """API7:2023 Server Side Request Forgery.

    Here: no endpoint fetches anything a client names: an artifact is the request body itself,
    never a URL to download. Proves, against a real HTTP server on 127.0.0.1 that would serve
    a valid model, that a URL sent as the artifact (raw, as ``text/uri-list``, in JSON), as
    the format, in an ONNX external-data location, as an inference input or parameter, as a
    grant's tenant, a description or a key name, is refused as an invalid artifact or stored
    as plain text, and that the server never sends it a single request.
    """
    base, hits = listener
    url = f"{base}/model.onnx"
    assert _get(url) == 200  # the listener works: it records this request
    assert hits == ["GET /model.onnx"]
    hits.clear()

    publish = "/api/v1/models/fetched/versions"
    external = onnx.load_model_from_string(scale_model())
    weights = external.graph.initializer[0]
    weights.ClearField("float_data")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key, entry.value = "location", url
    octets = {"content-type": "application/octet-stream"}
    uploads = {
        "url as the artifact": http.post(publish, content=url.encode(), headers=octets),
        "url as text/uri-list": http.post(
            publish, content=url.encode(), headers={"content-type": "text/uri-list"}
        ),
        "url in a JSON body": http.post(publish, json={"url": url, "source": url}),
        "url as the format": http.post(
            publish, params={"format": url, "url": url, "source": url}, content=b""
        ),
        "url as external data": http.post(publish, content=external.SerializeToString()),
    }
    http.post("/api/v1/models/echo/versions", content=identity_model(["BYTES"]))
    tensor = {"name": "in_BYTES", "datatype": "BYTES", "shape": [1, 3], "data": [url] * 3}
    echoed = http.post(
        "/v2/models/echo/infer",
        json={"inputs": [tensor], "parameters": {"url": url, "callback": url}},
    )
    described = http.post(
        "/api/v1/models/described/versions", params={"description": url}, content=scale_model()
    )
    granted = http.post("/api/v1/models/admin/echo/grants", json={"tenant": url})
    named = http.post("/api/v1/keys", json={"role": "viewer", "name": url})

    assert hits == []  # nothing was fetched, whatever the answers below
    assert {
        name: (r.status_code, r.json()["code"]) for name, r in uploads.items()
    } == dict.fromkeys(uploads, (400, "invalid_artifact"))
    assert http.get("/api/v1/models/admin/fetched").status_code == 404
    assert echoed.status_code == 200
    assert echoed.json()["outputs"][0]["data"] == [url] * 3  # data, never a link to follow
    assert described.json()["card"]["description"] == url
    assert granted.status_code == 404
    assert named.json()["key"]["name"] == url


def _get(url: str) -> int:
    """GET ``url`` with the standard library (only to check that the listener works)."""
    parts = urlsplit(url)
    connection = HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        connection.request("GET", parts.path)
        status = connection.getresponse().status
    finally:
        connection.close()
    return status


def _leaks_internals(text: str) -> list[str]:
    """Traces of the server's inside in an answer: tracebacks, source files, local paths."""
    pattern = r"Traceback|File \"|\.py\b|site-packages|/work/|/home/|/usr/lib|RuntimeError"
    return re.findall(pattern, text)


def test_api8_security_misconfiguration(
    settings: Settings,
    services: Services,
    admin_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """API8:2023 Security Misconfiguration.

    Here: the server's defaults must be the safe ones, and every answer, even a crash, must
    carry the security headers and reveal nothing of the server's inside. Proves that 2xx,
    401, 404, 405, 413, 422 and 500 answers carry nosniff, DENY, no-referrer, no-store and a
    ``default-src 'none'`` CSP (HSTS over HTTPS only); that a 500 has a request id and no
    stack trace, exception text or file path, and neither does any 4xx; that no CORS header
    lets another origin read answers; that ``Settings(docs_enabled=False)`` turns /docs,
    /redoc and /openapi.json off; that the default bind address is 127.0.0.1; and that the
    data directory (0700) and its key files (0600) are private.
    """
    assert "docs_enabled" in Settings.model_fields
    assert Settings.model_fields["host"].default == "127.0.0.1"

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom in /work/main/src/openmaas/registry/service.py line 3")

    monkeypatch.setattr(services.registry, "list", boom)
    app = create_app(settings, services)
    assert not app.debug
    with TestClient(app, headers=_as(admin_key), raise_server_exceptions=False) as http:
        http.post("/api/v1/models/m/versions", content=scale_model())
        answers = {
            "200": http.get("/api/v1/whoami"),
            "401": http.get("/api/v1/whoami", headers={"Authorization": "Bearer nope"}),
            "404": http.get("/nowhere"),
            "404 model": http.get("/api/v1/models/admin/nope"),
            "405": http.delete("/api/v1/tenants"),
            "400 json": http.post("/v2/models/m/infer", content=b'{"inputs": ['),
            "400 artifact": http.post("/api/v1/models/x/versions", content=b"\x00garbage"),
            "413": http.post("/v2/models/m/infer", content=b" " * (settings.max_request_bytes + 1)),
            "422": http.post("/api/v1/keys", json={"role": 5}),
            "500": http.get("/api/v1/models"),
        }
        for name, response in answers.items():
            assert str(response.status_code) == name.split()[0], (name, response.text)
            for header, value in SECURITY_HEADERS.items():
                assert response.headers.get(header) == value, (name, header)
            assert "strict-transport-security" not in response.headers
            assert "access-control-allow-origin" not in response.headers
            assert _leaks_internals(response.text) == [], (name, response.text)
        crash = answers["500"].json()
        assert crash["code"] == "internal_error"
        assert crash["request_id"] in crash["detail"]
        assert "boom" not in answers["500"].text
        cors = http.options(
            "/api/v1/models",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in cors.headers
        assert not cors.is_success
        docs = http.get("/docs")
        assert docs.status_code == 200
        assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
        assert http.get("/openapi.json").status_code == 200
        https = TestClient(app, base_url="https://testserver", headers=_as(admin_key))
        secure = https.get("/api/v1/whoami")
        assert secure.headers["strict-transport-security"].startswith("max-age=")

    closed = Settings(data_dir=tmp_path / "closed", demo_models=False, docs_enabled=False)
    with TestClient(create_app(closed)) as http:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert http.get(path).status_code == 404, path
        assert http.get("/v2/health/live").status_code == 200

    data_dir = settings.data_dir
    assert data_dir.stat().st_mode & 0o077 == 0
    key_files = [
        settings.admin_key_file,
        settings.root_key_file,
        settings.signing_key_file,
        settings.secret_file,
    ]
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in key_files} == {
        path.name: "0o600" for path in key_files
    }


def test_api9_improper_inventory_management(http: TestClient) -> None:
    """API9:2023 Improper Inventory Management.

    Here: the OpenAPI schema is the inventory: every route the app serves is in it (or is a
    docs page), it names the running version, it holds only the three API surfaces (/api/v1
    management, /v2 inference, /v1 OpenAI-compatible) and the Prometheus scrape at /metrics,
    and each of its routes
    needs an API key except the two health probes. Proves all of that by walking the app's
    routes and the schema and calling every documented operation without a key; old or
    future API versions answer 404.
    """
    schema = http.get("/openapi.json").json()
    assert schema["info"]["version"] == __version__
    documented = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
    }
    app = http.app
    assert isinstance(app, FastAPI)
    served = {
        (method, route.path_format)
        for route in iter_route_contexts(app.routes)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert len(served) >= 20
    undocumented = {(m, p) for m, p in served - documented if p not in DOCS_ROUTES}
    assert undocumented == set()
    assert documented - served == set()
    surfaces = [p for _, p in documented if not re.match(r"/api/v1/|/v2(/|$)|/v1/|/metrics$", p)]
    assert surfaces == [], "a new API surface: add it to the inventory"

    anonymous = _anonymous(http)
    for method, path in sorted(documented):
        concrete = re.sub(r"\{model_path\}|\{model_id\}", "admin/x", path)
        concrete = re.sub(r"\{[^}]+\}", "x", concrete)
        response = anonymous.request(method, concrete, json={})
        expected = 200 if path in HEALTH_ROUTES else 401
        assert response.status_code == expected, (method, path, response.text)
    for path in ("/api/v0/models", "/api/v2/models", "/api/models", "/v3/models/admin/x"):
        response = anonymous.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "route_not_found"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _strict(response: httpx2.Response) -> Any:
    """Parse an answer the way a strict JSON parser would (no NaN/Infinity, valid UTF-8)."""
    return json.loads(response.content.decode("utf-8"), parse_constant=_reject_constant)


def test_api10_unsafe_consumption_of_apis(http: TestClient, tmp_path: Path) -> None:
    """API10:2023 Unsafe Consumption of APIs.

    Here: what OpenMaaS consumes from elsewhere is model artifacts (made by other tools and
    uploaded) and what the models compute; both are untrusted. Proves that a pickle that
    would run code when loaded (also zipped, as torch.save writes) is refused as
    ``unsafe_artifact`` and never runs, that garbage, a truncated model and an ONNX model
    pointing its weights at a server file are refused as ``invalid_artifact``, and that model
    outputs (infinities, NaN, hostile strings) come back as strict JSON.
    """
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    malicious = pickle.dumps(Payload())
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("model/data.pkl", malicious)
        archive.writestr("model/version", "3\n")
    for name, content in [("pickle", malicious), ("torch-zip", zipped.getvalue())]:
        response = http.post(f"/api/v1/models/{name}/versions", content=content)
        assert response.status_code == 400, name
        assert response.json()["code"] == "unsafe_artifact", (name, response.text)
        assert http.get(f"/api/v1/models/admin/{name}").status_code == 404
    assert not marker.exists()

    local = onnx.load_model_from_string(scale_model())
    weights = local.graph.initializer[0]
    weights.ClearField("float_data")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key = "location"
    for name, content in [
        ("garbage", b"\x00\x01garbage" * 10),
        ("truncated", scale_model()[:40]),
        ("absolute-path", _with_location(local, "/etc/hostname")),
        ("relative-path", _with_location(local, "../../../../etc/hostname")),
    ]:
        response = http.post(f"/api/v1/models/{name}/versions", content=content)
        assert response.status_code == 400, name
        assert response.json()["code"] == "invalid_artifact", name

    http.post("/api/v1/models/huge/versions", content=scale_model(math.inf))
    answer = http.post(
        "/v2/models/huge/infer",
        json={
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, -1, 0, 2]}]
        },
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert _strict(answer)["outputs"][0]["data"] == [None, None, None, None]
    # Strings a model echoes come back as valid JSON strings, however hostile.
    http.post("/api/v1/models/echo/versions", content=identity_model(["BYTES"]))
    texts = ["\x00\x01\x1b[31m", '"}]}, "injected": {"', "\u2028</script>\ufeff"]
    tensor = {"name": "in_BYTES", "datatype": "BYTES", "shape": [1, 3], "data": texts}
    echoed = http.post("/v2/models/echo/infer", json={"inputs": [tensor]})
    assert echoed.status_code == 200, echoed.text
    assert set(_strict(echoed)) == {"model_name", "model_version", "outputs"}
    assert _strict(echoed)["outputs"][0]["data"] == texts


def _with_location(model: onnx.ModelProto, location: str) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.initializer[0].external_data[0].value = location
    return copy.SerializeToString()

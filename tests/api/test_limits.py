"""Request limits in process: compressed bodies, JSON depth, security headers, unsafe uploads."""

from __future__ import annotations

import gzip
import json
import pickle
import time
import types
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from openmaas.api import limits
from openmaas.api.headers import API_POLICY, DOCS_POLICY
from openmaas.api.limits import BodyLimitMiddleware
from openmaas.app import create_app
from openmaas.bootstrap import build_services, initialize
from openmaas.settings import Settings
from tests.helpers.models import scale_model

INFER = "/v2/models/admin/scale/infer"
GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["detail"]
    return body


@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:
    """The app with a 64 KiB body limit and the scale model published."""
    settings = Settings(data_dir=tmp_path / "d", demo_models=False, max_request_bytes=64 * 1024)
    services = build_services(settings)
    key = initialize(services).admin_key
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings, services), headers=headers) as client:
        assert client.post("/api/v1/models/scale/versions", content=scale_model()).is_success
        yield client


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


# -- compressed request bodies --------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress)],
)
def test_compressed_inference_request(small: TestClient, encoding: str, compress: Any) -> None:
    response = small.post(
        INFER,
        content=compress(_json(GOOD)),
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]


def test_compressed_management_body_and_upload(small: TestClient) -> None:
    created = small.post(
        "/api/v1/keys",
        content=gzip.compress(_json({"name": "zipped", "role": "viewer"})),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["key"]["name"] == "zipped"
    published = small.post(
        "/api/v1/models/scale/versions",
        content=gzip.compress(scale_model(3.0)),
        headers={"Content-Encoding": "gzip"},
    )
    assert published.status_code == 201, published.text


def test_gzip_bomb_is_refused_without_inflating_it(
    small: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    inflated = []

    class Spy:
        def __init__(self, wbits: int) -> None:
            self._real = zlib.decompressobj(wbits)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self._real.decompress(data, max_length)
            inflated.append(len(out))
            return out

    fake_zlib = types.SimpleNamespace(decompressobj=Spy, error=zlib.error)
    monkeypatch.setattr(limits, "zlib", fake_zlib)
    bomb = gzip.compress(b"\0" * 10_000_000)
    assert len(bomb) < 20_000
    response = small.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"})
    body = _problem(response, 413, "payload_too_large")
    assert "inflates" in body["detail"]
    assert sum(inflated) <= 64 * 1024 + 1  # never more than the limit and one byte


def test_streamed_bomb_is_refused_too(small: TestClient) -> None:
    bomb = gzip.compress(b"\0" * 10_000_000)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(bomb), 1000):
            yield bomb[start : start + 1000]

    response = small.post(INFER, content=chunks(), headers={"Content-Encoding": "gzip"})
    _problem(response, 413, "payload_too_large")
    assert small.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip", "compress"])
def test_unsupported_encodings_are_400(small: TestClient, encoding: str) -> None:
    response = small.post(INFER, content=_json(GOOD), headers={"Content-Encoding": encoding})
    body = _problem(response, 400, "bad_request")
    assert body["field"] == "Content-Encoding"
    assert "gzip, deflate" in body["detail"]


def test_identity_encoding_is_no_encoding(small: TestClient) -> None:
    response = small.post(INFER, content=_json(GOOD), headers={"Content-Encoding": "identity"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "body",
    [
        b"not gzip at all",
        gzip.compress(_json(GOOD))[:-12],
        gzip.compress(_json(GOOD)) + b"trailing",
    ],
    ids=["garbage", "truncated", "trailing"],
)
def test_broken_gzip_is_400(small: TestClient, body: bytes) -> None:
    response = small.post(INFER, content=body, headers={"Content-Encoding": "gzip"})
    problem = _problem(response, 400, "bad_request")
    assert problem["field"] == "Content-Encoding"
    broken_key = small.post(
        "/api/v1/keys",
        content=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    _problem(broken_key, 400, "bad_request")


def test_downstream_sees_the_inflated_body_without_content_encoding() -> None:
    seen: dict[str, Any] = {}

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        seen["headers"] = dict(request.headers)
        seen["body"] = await request.body()
        await JSONResponse({"ok": True})(scope, receive, send)

    client = TestClient(BodyLimitMiddleware(echo, limit=1024, upload_limit=1024))
    payload = b'{"hello": "world"}' * 10
    response = client.post(
        "/x", content=gzip.compress(payload), headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200
    assert seen["body"] == payload
    assert "content-encoding" not in seen["headers"]
    assert "content-length" not in seen["headers"]


# -- JSON depth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' * 10_000,
        b"[" * 60_000,
        _json({"inputs": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}),
    ],
    ids=["open-objects", "open-arrays", "closed"],
)
def test_deep_json_is_400_for_oip_with_any_content_type(small: TestClient, body: bytes) -> None:
    for content_type in ("application/json", "text/plain", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = small.post(INFER, content=body, headers=headers)
        _problem(response, 400, "json_too_deep")


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' * 10_000,
        _json(
            {
                "name": "k",
                "scopes": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["infer"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
            }
        ),
    ],
    ids=["open", "closed"],
)
@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json"])
def test_deep_json_is_400_for_management_bodies(
    small: TestClient, body: bytes, content_type: str
) -> None:
    response = small.post("/api/v1/keys", content=body, headers={"Content-Type": content_type})
    _problem(response, 400, "json_too_deep")
    compressed = small.post(
        "/api/v1/keys",
        content=gzip.compress(body),
        headers={"Content-Type": content_type, "Content-Encoding": "gzip"},
    )
    _problem(compressed, 400, "json_too_deep")


def test_100k_open_objects_answer_400_quickly(http: TestClient) -> None:
    """Under the default 16 MiB limit: refused before parsing, never a RecursionError 500."""
    body = b'{"a":' * 100_000
    started = time.perf_counter()
    http.post("/api/v1/models/scale/versions", content=scale_model())
    _problem(http.post("/v2/models/admin/scale/infer", content=body), 400, "json_too_deep")
    headers = {"Content-Type": "application/json"}
    _problem(http.post("/api/v1/keys", content=body, headers=headers), 400, "json_too_deep")
    assert time.perf_counter() - started < 5


def test_streamed_management_body_over_the_limit_is_413(small: TestClient) -> None:
    """FastAPI would answer its own generic 400; the limit's 413 replaces it."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    response = small.post(
        "/api/v1/keys", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _problem(response, 413, "payload_too_large")


def test_uploads_are_not_scanned_as_json(small: TestClient) -> None:
    response = small.post(
        "/api/v1/models/scale/versions",
        content=scale_model() + b"[" * 100,  # trailing bytes: invalid, but not "too deep"
        headers={"Content-Type": "application/json"},
    )
    _problem(response, 400, "invalid_artifact")


def test_binary_tensor_data_is_not_scanned_as_json(small: TestClient) -> None:
    header = _json(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    )
    data = b"[[[[" * 4  # brackets as float bytes: 4.5e-15, not JSON
    response = small.post(
        INFER,
        content=header + data,
        headers={
            "Content-Type": "application/json",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert response.status_code == 200, response.text


# -- security headers and docs ------------------------------------------------------------


def _assert_security_headers(response: Any, policy: str = API_POLICY) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    assert response.headers["content-security-policy"] == policy


def test_security_headers_on_every_kind_of_response(small: TestClient) -> None:
    _assert_security_headers(small.get("/v2/health/live"))
    _assert_security_headers(small.get("/nowhere"))  # 404 from the router
    _assert_security_headers(small.post(INFER, json={"inputs": []}))  # 400 problem
    _assert_security_headers(small.get("/v2", headers={"Authorization": ""}))  # 401
    too_big = small.post(INFER, content=b"x" * 70_000)  # 413 from the middleware
    assert too_big.status_code == 413
    _assert_security_headers(too_big)
    assert "strict-transport-security" not in small.get("/v2/health/live").headers


def test_security_headers_on_unexpected_errors(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", demo_models=False)
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("bug")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    _assert_security_headers(response)


def test_hsts_only_over_https(small: TestClient) -> None:
    small.base_url = small.base_url.copy_with(scheme="https")
    response = small.get("/v2/health/live")
    assert response.headers["strict-transport-security"].startswith("max-age=")
    _assert_security_headers(response)


def test_docs_pages_get_a_policy_that_lets_them_load(small: TestClient) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        page = small.get(path)
        assert page.status_code == 200, path
        _assert_security_headers(page, DOCS_POLICY)
    assert "https://cdn.jsdelivr.net" in DOCS_POLICY
    assert "'unsafe-inline'" not in API_POLICY
    schema = small.get("/openapi.json")
    assert schema.status_code == 200
    _assert_security_headers(schema)


def test_docs_can_be_switched_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", demo_models=False, docs_enabled=False)
    with TestClient(create_app(settings)) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            response = client.get(path)
            assert response.status_code == 404, path
            _assert_security_headers(response)
        assert client.get("/v2/health/live").status_code == 200


# -- unsafe uploads -----------------------------------------------------------------------


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("never printed",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_publishing_a_pickle_is_400_unsafe_artifact(http: TestClient, protocol: int) -> None:
    response = http.post(
        "/api/v1/models/pickled/versions", content=pickle.dumps(_Payload(), protocol=protocol)
    )
    body = _problem(response, 400, "unsafe_artifact")
    assert "ONNX" in body["detail"]
    assert http.get("/api/v1/models/admin/pickled").status_code == 404

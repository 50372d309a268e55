"""What the schemathesis run (test_schemathesis.py) found, pinned down one case at a time."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.models import scale_model

PROBLEM = "application/problem+json"
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def _openapi(http: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = http.get("/openapi.json").json()
    return document


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/api/v1/whoami", "GET"),
        # GET and POST /keys are two routes: Allow named only the first one's method.
        ("DELETE", "/api/v1/keys", "GET, POST"),
        ("OPTIONS", "/api/v1/models/admin/m", "GET, PATCH"),
        ("PATCH", "/api/v1/models/admin/m/grants", "GET, POST"),
        ("PATCH", "/api/v1/models/m/aliases/prod", "PUT"),
        ("PUT", "/v2/models/admin/m/infer", "GET, POST"),
    ],
)
def test_a_405_lists_every_method_of_the_path_in_allow(
    http: TestClient, method: str, path: str, allow: str
) -> None:
    response = http.request(method, path)
    _problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow
    assert allow in response.json()["detail"]


def test_the_oip_routes_say_which_method_a_path_takes(http: TestClient) -> None:
    http.post("/api/v1/models/scale/versions", content=scale_model())
    infer_by_get = http.get("/v2/models/admin/scale/infer")
    assert _problem(infer_by_get, 405, "method_not_allowed")
    assert infer_by_get.headers["allow"] == "POST"
    metadata_by_post = http.post("/v2/models/admin/scale", json=BODY)
    _problem(metadata_by_post, 405, "method_not_allowed")
    assert metadata_by_post.headers["allow"] == "GET"


def test_model_routes_no_longer_take_sub_resource_paths_for_model_ids(http: TestClient) -> None:
    # Was: PATCH .../m/grants updated a model "m/grants" (or answered 422 for its body).
    http.post("/api/v1/models/m/versions", content=scale_model())
    response = http.patch("/api/v1/models/admin/m/grants", json={"visibility": "public"})
    _problem(response, 405, "method_not_allowed")
    assert http.get("/api/v1/models/admin/m").json()["summary"]["visibility"] == "private"
    # Was: 422 "model id 'a/b/c' is not valid"; no route has such a path.
    _problem(http.get("/api/v1/models/a/b/c"), 404, "route_not_found")
    _problem(http.get("/api/v1/models/health/"), 404, "route_not_found")


def test_grants_is_a_reserved_name(http: TestClient) -> None:
    # A model "grants" could never be shown: GET /api/v1/models/t/grants lists t's grants.
    response = http.post("/api/v1/models/grants/versions", content=scale_model())
    assert "reserved" in _problem(response, 422, "validation_error")["detail"]
    tenant = http.post("/api/v1/tenants", json={"name": "grants"})
    assert "reserved" in _problem(tenant, 422, "validation_error")["detail"]


def test_integers_past_what_the_database_stores_are_a_422_not_a_500(http: TestClient) -> None:
    # Was: OverflowError from SQLite, a 500.
    huge = 2**63
    _problem(http.get(f"/api/v1/audit?after={huge}"), 422, "validation_error")
    http.post("/api/v1/models/m/versions", content=scale_model())
    http.post("/api/v1/tenants", json={"name": "lab"})
    grant = http.post("/api/v1/models/m/grants", json={"tenant": "lab", "quota_per_day": huge})
    _problem(grant, 422, "validation_error")
    ok = http.post("/api/v1/models/m/grants", json={"tenant": "lab", "quota_per_day": 2**53 - 1})
    assert ok.status_code == 201, ok.text


def test_every_operation_documents_its_problem_responses(http: TestClient) -> None:
    # Was: only FastAPI's 422 (HTTPValidationError, application/json, never sent) was documented.
    document = _openapi(http)
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("4XX", "5XX"):
                content = responses[status]["content"]
                if path.startswith("/v1/"):  # the OpenAI-compatible API: OpenAI's error shape
                    assert list(content) == ["application/json"], (method, path, status)
                    schema = content["application/json"]["schema"]["$ref"]
                    assert schema == "#/components/schemas/OpenAIError"
                    continue
                assert list(content) == [PROBLEM], (method, path, status)
                assert content[PROBLEM]["schema"]["title"] == "Problem"


def test_the_api_key_is_declared_where_it_is_needed(http: TestClient) -> None:
    document = _openapi(http)
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    paths = document["paths"]
    assert paths["/api/v1/whoami"]["get"]["security"] == [{"ApiKey": []}]
    assert paths["/v2/models/{model_path}"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in paths["/v2/health/live"]["get"]


def test_the_inference_body_is_documented(http: TestClient) -> None:
    operation = _openapi(http)["paths"]["/v2/models/{model_path}"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["inputs"]
    assert "FP32" in schema["properties"]["inputs"]["items"]["properties"]["datatype"]["enum"]
    assert set(operation["responses"]["200"]["content"]) == {
        "application/json",
        "application/octet-stream",
        "image/png",  # explanation heatmaps
    }
    model_path = next(p for p in operation["parameters"] if p["name"] == "model_path")
    assert model_path["schema"]["pattern"] == r"^.+/(infer|explain)$"


def test_rules_the_services_check_are_in_the_schema(http: TestClient) -> None:
    # Was: schema-valid requests (an empty tenant name, a blank member, an erasure naming
    # nothing) that the services refused with a 422.
    schemas = _openapi(http)["components"]["schemas"]
    tenant_name = schemas["TenantCreate"]["properties"]["name"]
    assert tenant_name["pattern"] == "^[a-z0-9][a-z0-9._-]{0,62}$"
    assert "grants" in tenant_name["not"]["enum"]
    assert schemas["KeyCreate"]["properties"]["role"]["enum"][0] == "owner"
    assert schemas["MemberCreate"]["properties"]["name"]["minLength"] == 1
    assert [b["required"] for b in schemas["ErasureRequest"]["oneOf"]] == [
        ["tenant"],
        ["model"],
        ["api_key"],
        ["member"],
    ]


def test_optional_query_parameters_are_never_null(http: TestClient) -> None:
    # Was: "null" in the schema, which a query string sends as ``?alias=``: a 422.
    operation = _openapi(http)["paths"]["/api/v1/models/{model_id}/versions"]["post"]
    for parameter in operation["parameters"]:
        if parameter["in"] == "query":
            assert parameter["schema"]["type"] == "string", parameter
            assert "anyOf" not in parameter["schema"], parameter
    alias = next(p for p in operation["parameters"] if p["name"] == "alias")
    assert {"pattern": "^[0-9]+$"} in alias["schema"]["not"]["anyOf"]
